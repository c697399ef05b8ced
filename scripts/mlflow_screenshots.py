"""Screenshot what people compare in the MLflow UI, in headless Chromium: the registered model's
versions with their aliases, tags (test top-1, the promotion decision and reason, the parent
version of an update) and model cards.

Starts `mlflow ui` on the active stack's tracking store (loopback, a free port), closes the
assistant pane, and writes a PNG. Needs Debian's `chromium` and `chromium-driver` (Selenium
drives them); nothing else is downloaded. Run it after `make run` and `make update`:

    .venv/bin/python scripts/mlflow_screenshots.py --out docs/images
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    time.sleep(6)  # the single-page app renders after its API calls
    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):  # the assistant pane
        button.click()
    time.sleep(1)


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="default: the active kickvision stack's")
    parser.add_argument("--model-name", default="kickvision")
    parser.add_argument("--out", default="docs/images", help="folder for mlflow_versions.png")
    args = parser.parse_args()

    os.environ.setdefault("ZENML_CONFIG_PATH", str(Path.cwd() / ".kickvision" / "zenml"))
    uri = args.tracking_uri
    if uri is None:
        from orchestration.stack import ensure_stack, use_tracking

        ensure_stack()
        uri = use_tracking()

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
    out = Path(args.out)
    driver = None
    try:
        wait_for(f"{base}/health")
        driver = browser()
        open_page(driver, f"{base}/#/models/{args.model_name}")
        driver.save_screenshot(str(out / "mlflow_versions.png"))
        print(f"wrote {out / 'mlflow_versions.png'}")
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
