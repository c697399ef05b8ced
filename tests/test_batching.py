"""Concurrent requests share forward passes and each gets exactly its own rows back."""

import threading
import time

import numpy as np
import pytest

from kickvision.serve.batching import ForwardBatcher


class RecordingForward:
    """A forward pass that takes a while and answers row i with the value of its text."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.sizes: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, images, texts):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.sizes.append(len(texts))
        time.sleep(self.seconds)
        if any(t == "boom" for t in texts):
            with self.lock:
                self.running -= 1
            raise RuntimeError("the pass failed")
        values = np.array([[float(t)] for t in texts], np.float32)
        with self.lock:
            self.running -= 1
        return values, values * 10


def call_together(batcher, requests):
    """Each request from its own thread, released at the same moment; answers (or errors) in order."""
    answers = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def caller(i, texts):
        start.wait()
        try:
            answers[i] = batcher([None] * len(texts), texts)
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=caller, args=(i, r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return answers


def test_a_lone_request_runs_at_once_as_its_own_pass():
    forward = RecordingForward()
    probabilities, embeddings = ForwardBatcher(forward)([None, None], ["1", "2"])
    assert probabilities.tolist() == [[1.0], [2.0]] and embeddings.tolist() == [[10.0], [20.0]]
    assert forward.sizes == [2]


def test_concurrent_requests_share_passes_one_at_a_time_and_each_gets_its_own_rows():
    forward = RecordingForward()
    requests = [[str(10 * i + j) for j in range(i % 3 + 1)] for i in range(12)]
    answers = call_together(ForwardBatcher(forward), requests)
    for texts, (probabilities, embeddings) in zip(requests, answers, strict=True):
        assert probabilities[:, 0].tolist() == [float(t) for t in texts]
        assert embeddings[:, 0].tolist() == [10 * float(t) for t in texts]
    assert sum(forward.sizes) == sum(len(r) for r in requests)  # every row in exactly one pass
    assert len(forward.sizes) < len(requests)  # requests that waited were batched together
    assert forward.most_at_once == 1  # passes never overlap on the cores


def test_a_failed_pass_fails_its_callers_and_the_batcher_keeps_serving():
    forward = RecordingForward()
    batcher = ForwardBatcher(forward)
    answers = call_together(batcher, [["1"], ["boom"], ["3"], ["4"]])
    failed = [a for a in answers if isinstance(a, Exception)]
    assert failed and all(str(a) == "the pass failed" for a in failed)
    served = [a for a in answers if not isinstance(a, Exception)]
    assert all(a[0].shape == (1, 1) for a in served)
    assert batcher([None], ["5"])[0].tolist() == [[5.0]]


def test_images_and_texts_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="2 images for 1 texts"):
        ForwardBatcher(RecordingForward())([None, None], ["1"])
