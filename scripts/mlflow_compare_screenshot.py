"""Screenshot the MLflow UI comparing the two latest kickvision runs, in headless Chromium.

Starts `mlflow ui` on the active stack's tracking store (loopback, a free port), opens the
compare view of the two most recent finished runs that carry kickvision tags, and writes a PNG.
Needs Chromium (Debian: `apt-get install chromium`); nothing else is downloaded.

    .venv/bin/python scripts/mlflow_compare_screenshot.py --out docs/images/mlflow_compare.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_runs(uri: str, n: int = 2) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string="attributes.status = 'FINISHED' and tags.`kickvision.pipeline` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=n,
    )
    if len(runs) < n:
        raise SystemExit(f"need {n} finished kickvision runs in {uri}, found {len(runs)}: run `make run` twice")
    return runs


def wait_for(url: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def screenshot(url: str, out: Path, chromium: str, size: str = "1600,1100", wait_ms: int = 15000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out.resolve()}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="default: the active kickvision stack's")
    parser.add_argument("--out", default="docs/images/mlflow_compare.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    os.environ.setdefault("ZENML_CONFIG_PATH", str(Path.cwd() / ".kickvision" / "zenml"))
    uri = args.tracking_uri
    if uri is None:
        from orchestration.stack import ensure_stack, use_tracking

        ensure_stack()
        uri = use_tracking()
    runs = latest_runs(uri)
    ids = json.dumps([r.info.run_id for r in runs])
    experiments = json.dumps(sorted({r.info.experiment_id for r in runs}))
    query = urllib.parse.urlencode({"runs": ids, "experiments": experiments})

    server = None
    base = uri.rstrip("/")
    if not uri.startswith(("http://", "https://")):
        port = free_port()
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        server = subprocess.Popen(
            [mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(f"{base}/#/compare-runs?{query}", out, args.chromium)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    names = ", ".join(r.info.run_name for r in runs)
    print(f"wrote {out} (MLflow compare view of {names})")


if __name__ == "__main__":
    main()
