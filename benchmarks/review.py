"""The review desk as a merchandiser uses it: `POST /api/predict` latency, and the page's three views.

Loads a registered model (default the champion of the active stack), writes a review workspace
from the catalog's own test split (the products that model did not learn, under the config's seed):
a catalog of `--catalog-products` of them for the Audit view and a drop of `--drop-products` others
for the Drops view (images copied, nothing written beside the real catalog). Starts the desk on
loopback, then one client sends `--products` test products (photo, title, the attributes the model
reads), each with and without explanations, alternating; prints p50/p90/p99 latency (client side)
and writes JSON. With `--screenshots DIR`, headless Chromium captures Classify, Audit and Drops.

    .venv/bin/python benchmarks/review.py --catalog ../shared/data/fashion-footwear --config fashion
    .venv/bin/python benchmarks/review.py --catalog ../shared/data/fashion-footwear --config fashion \
        --screenshots docs/images
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from common import write_result

from kickvision.config import load_config
from kickvision.data.catalog import read_catalog, resolve_inside, write_catalog
from kickvision.data.prepare import group_split, product_groups
from kickvision.data.validation import quarantine_bad_rows


def review_workspace(catalog: str, cfg, out: Path, n_catalog: int, n_drop: int, seed: int) -> tuple[Path, Path]:
    """(catalog folder, drops folder) of products from the catalog's test split."""
    source = read_catalog(catalog)
    rows = quarantine_bad_rows(source, cfg.validate_).catalog.rows.reset_index(drop=True)
    rows["group"] = product_groups(rows)
    test = rows[group_split(rows, cfg.data, cfg.seed) == "test"].drop(columns=["group"])
    test = test.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = {out / "catalog": test.iloc[:n_catalog], out / "drops" / "next-drop": test.iloc[n_catalog:][:n_drop]}
    for folder, part in parts.items():
        (folder / "images").mkdir(parents=True, exist_ok=True)
        names = []
        for image in part["image"]:
            target = Path("images") / Path(image).name
            shutil.copyfile(resolve_inside(source.root, image), folder / target)
            names.append(str(target))
        write_catalog(part.assign(image=names), folder)
    return out / "catalog", out / "drops"


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)}


def screenshots(base: str, catalog: Path, out: Path) -> list[str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    wait = WebDriverWait(browser, 600)
    saved = []
    try:
        browser.get(base + "/")
        wait.until(lambda b: "categories" in b.find_element(By.ID, "model").text)
        row = read_catalog(catalog).rows.iloc[0]
        browser.find_element(By.ID, "image").send_keys(str(catalog / row["image"]))
        browser.find_element(By.ID, "title").send_keys(row["title"])
        for element in browser.find_elements(By.CSS_SELECTOR, "#attributes input"):
            element.send_keys(str(row.get(element.get_attribute("name")) or ""))
        browser.find_element(By.ID, "classify").click()
        wait.until(lambda b: b.find_element(By.ID, "category").text)
        for view, ready in (
            ("classify", None),
            ("audit", (By.CSS_SELECTOR, "#audit-table tbody tr")),
            ("drops", (By.CSS_SELECTOR, "#drop-list button")),
        ):
            if view != "classify":
                browser.find_element(By.ID, f"tab-{view}").click()
                wait.until(ec.presence_of_element_located(ready))
            if view == "drops":
                browser.find_element(By.CSS_SELECTOR, "#drop-list button").click()
                wait.until(ec.presence_of_element_located((By.ID, "drop-advice")))
            time.sleep(1.0)  # thumbnails
            path = out / f"review_{view}.png"
            browser.save_screenshot(str(path))
            saved.append(str(path))
    finally:
        browser.quit()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--config", default="fashion")
    parser.add_argument("--model-uri", help="default: models:/kickvision@champion of the active stack")
    parser.add_argument("--products", type=int, default=40, help="test products sent (each twice)")
    parser.add_argument("--catalog-products", type=int, default=600)
    parser.add_argument("--drop-products", type=int, default=200)
    parser.add_argument("--screenshots", help="folder for review_classify/audit/drops.png")
    parser.add_argument("--out", help="JSON (default benchmarks/results/review_<catalog>_<config>.json)")
    args = parser.parse_args()

    import uvicorn

    from kickvision.review.app import create_app
    from kickvision.review.service import ReviewDesk
    from kickvision.serve.registry import champion_uri, load_registered_bundle
    from orchestration.stack import ensure_stack, use_tracking

    cfg = load_config(args.config)
    ensure_stack()
    use_tracking()
    uri = args.model_uri or champion_uri("kickvision")
    bundle = load_registered_bundle(uri)
    if bundle.spec.review_threshold is None:  # trained before the threshold existed: choose it as training would
        from common import prepared_catalog

        from kickvision.evaluate.calibration import calibrate_temperature

        data, _, _ = prepared_catalog(args.catalog, cfg)
        chosen = calibrate_temperature(bundle, data)
        print(f"{uri} predates the review threshold; chosen on its validation split: {chosen}")
    with tempfile.TemporaryDirectory() as tmp:
        catalog, drops = review_workspace(
            args.catalog, cfg, Path(tmp), args.catalog_products, args.drop_products, cfg.seed
        )
        desk = ReviewDesk(bundle, uri, catalog, drops, cfg.validate_)
        server = uvicorn.Server(uvicorn.Config(create_app(desk), host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        rows = read_catalog(catalog).rows.head(args.products)
        timings: dict[str, list[float]] = {"with explanations": [], "without explanations": []}
        for warm, row in enumerate(rows.itertuples(index=False)):
            fields = {"title": row.title, **{c: getattr(row, c) or "" for c in bundle.text_columns}}
            photo = (catalog / row.image).read_bytes()
            for label, explain in (("with explanations", "true"), ("without explanations", "false")):
                started = time.perf_counter()
                reply = requests.post(
                    f"{base}/api/predict", files={"image": ("p.jpg", photo)}, data={**fields, "explain": explain}
                )
                reply.raise_for_status()
                if warm >= 2:  # the first requests warm caches
                    timings[label].append(1000 * (time.perf_counter() - started))
        shots = screenshots(base, catalog, Path(args.screenshots)) if args.screenshots else []
        server.should_exit = True
        thread.join(10)

    result = {
        "model": uri,
        "config": args.config,
        "requests": {k: {"n": len(v), **percentiles(v)} for k, v in timings.items()},
        "screenshots": shots,
    }
    print(f"POST /api/predict, {uri}, one client, loopback (ms)")
    print(f"{'':<24}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}")
    for label, stats in result["requests"].items():
        print(f"{label:<24}{stats['n']:>5}{stats['p50']:>9}{stats['p90']:>9}{stats['p99']:>9}")
    write_result(result, args.out, f"review_{Path(args.catalog).name}_{args.config}.json")
    if shots:
        print(f"screenshots: {', '.join(shots)}")


if __name__ == "__main__":
    main()
