"""The served champion under load: `mlflow models serve` on loopback, driven by concurrent clients.

Starts `mlflow models serve` on a registered model (default `models:/kickvision@champion` of the
active stack) on 127.0.0.1, waits for /ping, then for each scenario runs `--clients` threads that
send requests back to back for `--seconds` (so it stops by itself): single products, batches of 32,
each with photos as base64 bytes, and with one request in ten a bad payload (undecodable image,
k = -1, no columns) that must get a 4xx. Prints requests/s, products/s, p50/p99 latency of the
valid requests, their errors, and what the bad ones got; writes JSON; stops the server.

    .venv/bin/python benchmarks/serving.py                               # the champion of the active stack
    .venv/bin/python benchmarks/serving.py --model-uri models:/kickvision/3 --clients 4 --seconds 20
    .venv/bin/python benchmarks/serving.py --catalog ../shared/data/fashion-footwear   # a model that reads attributes
    .venv/bin/python benchmarks/serving.py --bundle /tmp/pruned/r0.3-d1.0 --catalog ...  # a bundle folder
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from common import write_result

BAD_PAYLOADS = [
    {"dataframe_split": {"columns": ["image", "title"], "data": [["bm90IGFuIGltYWdl", "x"]]}},  # "not an image"
    {"dataframe_split": {"columns": ["image", "title"], "data": [["", "Black Heels"]]}, "params": {"k": -1}},
    {"dataframe_split": {"columns": ["colour"], "data": [["red"]]}},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def products(bundle, n: int, catalog: str | None) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): base64 photo, title and the attributes the model reads, of `n` products of the
    model's own catalog index (attributes looked up in `catalog`, the folder it was trained on)."""
    from kickvision.data.catalog import read_catalog
    from kickvision.serve.pyfunc_logging import image_to_base64

    if bundle.index is None:
        raise SystemExit("the model carries no catalog index to draw products from")
    columns = ["image", "title", *bundle.text_columns]
    attributes = None
    if bundle.text_columns:
        if catalog is None:
            raise SystemExit(f"the model reads {', '.join(bundle.text_columns)}: pass --catalog DIR to send them")
        attributes = read_catalog(catalog).rows.set_index("product_id")[list(bundle.text_columns)].fillna("")
    rows = []
    for item in bundle.index.items.itertuples():
        if isinstance(item.image, str) and Path(item.image).is_file():
            extra = [] if attributes is None else [str(v) for v in attributes.loc[item.product_id]]
            rows.append([image_to_base64(item.image), str(item.title), *extra])
        if len(rows) == n:
            break
    if not rows:
        raise SystemExit("the model's index names no photo on this machine; run on the machine that trained it")
    return columns, rows


def log_bundle(bundle, columns: list[str], row: list[str], folder: str) -> tuple[str, str]:
    """(tracking URI, model URI): `bundle` logged as the training pipeline logs it (models-from-code
    pyfunc, kickvision/serve/pyfunc_logging.py) into a throwaway MLflow store under `folder`."""
    import mlflow
    import pandas as pd

    from kickvision.serve.pyfunc_logging import log_pyfunc

    tracking = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(tracking)
    experiment = mlflow.create_experiment("serving-benchmark", artifact_location=Path(folder, "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pyfunc(bundle, pd.DataFrame([row], columns=columns))
    return tracking, info.model_uri


def alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def post(url: str, payload: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = -1  # connection refused or reset: the server fell over
    return status, time.perf_counter() - started


def drive(url: str, good: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads sending back to back for `seconds`; one request in ten is a bad payload."""
    bad = [json.dumps(p).encode() for p in BAD_PAYLOADS]
    results: list[tuple[bool, int, float]] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))  # one sequence for all clients: every tenth request is bad, whoever sends it

    def client(c: int) -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter)
            is_bad = i % 10 == 9
            status, latency = post(url, bad[i % len(bad)] if is_bad else good[i % len(good)])
            with lock:
                results.append((is_bad, status, latency))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    valid = [(s, t) for b, s, t in results if not b]
    latencies = np.array([t for s, t in valid if s == 200]) * 1000
    bad_status = [s for b, s, _ in results if b]
    return {
        "requests": len(results),
        "valid_requests_per_s": len(valid) / elapsed,
        "valid_errors": sum(s != 200 for s, _ in valid),
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        "bad_requests": len(bad_status),
        "bad_answered_4xx": sum(400 <= s < 500 for s in bad_status),
        "bad_answered_5xx_or_dropped": sum(s >= 500 or s < 0 for s in bad_status),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="default: models:/<registry.model_name>@champion on the active stack")
    parser.add_argument(
        "--bundle", help="serve this bundle folder instead (e.g. from pruning.py --save-pruned), logged as a pyfunc"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="per scenario")
    parser.add_argument("--catalog", help="the catalog folder the model was trained on (for its attribute columns)")
    parser.add_argument("--workers", type=int, default=1, help="mlflow models serve --workers")
    parser.add_argument(
        "--server-threads", type=int, help="torch threads per server worker (OMP_NUM_THREADS; default: torch's own)"
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/serving_<model>.json)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be at least 1 and --seconds positive")
    if args.bundle and args.model_uri:
        parser.error("--bundle and --model-uri name two models: pick one")

    from kickvision.model.bundle import load_bundle
    from kickvision.serve.registry import load_registered_bundle

    store = tempfile.TemporaryDirectory()
    if args.bundle:
        bundle = load_bundle(args.bundle)
        columns, rows = products(bundle, 64, args.catalog)
        tracking, model_uri = log_bundle(bundle, columns, rows[0], store.name)
        del bundle
        label = Path(args.bundle).resolve().as_posix()
    else:
        from orchestration.stack import ensure_stack, use_tracking

        ensure_stack()
        tracking = use_tracking()
        model_uri = label = args.model_uri or "models:/kickvision@champion"
        columns, rows = products(load_registered_bundle(model_uri), 64, args.catalog)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking,
        "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ['PATH']}",
    }
    if args.server_threads:
        env["OMP_NUM_THREADS"] = str(args.server_threads)
    command = [str(mlflow_bin), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    with store, tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while not alive(f"http://127.0.0.1:{port}/ping"):
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise SystemExit(log.read().decode()[-3000:])
                time.sleep(1)
            url = f"http://127.0.0.1:{port}/invocations"
            single = [json.dumps({"dataframe_split": {"columns": columns, "data": [r]}}).encode() for r in rows]
            batch = [
                json.dumps({"dataframe_split": {"columns": columns, "data": rows[i : i + 32]}}).encode()
                for i in range(0, len(rows) - 31, 32)
            ]
            post(url, single[0])  # warm-up
            scenarios = {"single product": (single, 1), "batch of 32": (batch, 32)}
            if not batch:
                print(f"only {len(rows)} products with photos: no batch-of-32 scenario", flush=True)
                del scenarios["batch of 32"]
            table = {}
            for name, (payloads, size) in scenarios.items():
                table[name] = drive(url, payloads, args.clients, args.seconds)
                table[name]["products_per_s"] = table[name]["valid_requests_per_s"] * size
                print(json.dumps({name: table[name]}), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    threads = f", {args.server_threads} thread(s) each" if args.server_threads else ""
    print(f"\n{label}, {args.clients} clients, {args.seconds:.0f} s per scenario, {args.workers} worker(s){threads}")
    print("| request | valid req/s | products/s | p50 ms | p99 ms | errors (valid) | bad -> 4xx | bad -> 5xx/dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in table.items():
        print(
            f"| {name} | {r['valid_requests_per_s']:.1f} | {r['products_per_s']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['valid_errors']} | {r['bad_answered_4xx']}/{r['bad_requests']} | "
            f"{r['bad_answered_5xx_or_dropped']} |"
        )
    name = label.replace(":/", "_").replace("/", "_").replace("@", "_")
    meta = {"model_uri": label, "clients": args.clients, "seconds": args.seconds, "workers": args.workers}
    meta["server_threads"] = args.server_threads
    clean = {k: {m: (None if isinstance(v, float) and v != v else v) for m, v in r.items()} for k, r in table.items()}
    write_result({"meta": meta, "scenarios": clean}, args.out, f"serving_{name}.json")


if __name__ == "__main__":
    main()
