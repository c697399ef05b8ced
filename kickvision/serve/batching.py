"""One forward pass for concurrent requests: opportunistic micro-batching for the served model.

MLflow's scoring server runs each request in its own thread. Left alone, concurrent requests run
concurrent forward passes whose thread pools fight over the same cores, and a single product pays for
a whole pass. `ForwardBatcher` makes them take turns and share passes instead:

1. a caller appends its products (already decoded, in its own thread) to the waiting list;
2. it waits for the model; whoever gets it takes the *whole* waiting list, runs one forward pass on
   the concatenation and hands each caller its own rows;
3. a caller whose rows were served by someone else's pass finds its result ready and returns.

No time window is waited for: an idle server runs a lone request at once (no added latency), and a
busy one batches exactly the requests that arrived while it was busy. A pass that fails fails every
caller in it, with the same error; the batcher keeps serving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

Forward = Callable[[list, list], tuple[np.ndarray, np.ndarray]]


class ForwardBatcher:
    """Wraps `forward(images, texts) -> (probabilities [N, C], embeddings [N, D])` for concurrent callers."""

    def __init__(self, forward: Forward):
        self._forward = forward
        self._waiting: list[tuple[Sequence, Sequence, Future]] = []
        self._waiting_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def __call__(self, images: Sequence, texts: Sequence) -> tuple[np.ndarray, np.ndarray]:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        job: Future = Future()
        with self._waiting_lock:
            self._waiting.append((images, texts, job))
        while not job.done():
            with self._model_lock:
                if job.done():  # served by the pass that held the model while we waited
                    break
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                self._run(batch)  # our own job is in it: it is done when this returns
        return job.result()

    def _run(self, batch: list[tuple[Sequence, Sequence, Future]]) -> None:
        images = [image for part in batch for image in part[0]]
        texts = [text for part in batch for text in part[1]]
        try:
            probabilities, embeddings = self._forward(images, texts)
        except BaseException as exc:  # every caller of this pass gets the error; the batcher lives on
            for _, _, job in batch:
                job.set_exception(exc)
            return
        start = 0
        for part_images, _, job in batch:
            stop = start + len(part_images)
            job.set_result((probabilities[start:stop], embeddings[start:stop]))
            start = stop
