"""The review desk: a real server on loopback, driven through its JSON API and, where Chromium is
installed, through its page in a headless browser."""

import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch
from PIL import Image

from kickvision.config import ValidateConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.corrections import CORRECTIONS_FILE, read_corrections
from kickvision.data.demo import write_demo_catalog, write_demo_drop
from kickvision.review.app import FORM_OVERHEAD
from kickvision.review.drift import AGREEMENT_DROP, RETRAIN_DRIFT
from kickvision.review.service import ReviewDesk
from kickvision.serve.predictor import ShoePredictor
from tests.conftest import free_port


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    catalog = write_demo_catalog(root / "catalog", n_per_class=6, image_size=32)
    drops = root / "drops"
    write_demo_drop(drops / "drop-1", n_per_class=3, new_per_class=8, image_size=32)
    strange = write_demo_drop(drops / "drop-strange", n_per_class=6, new_categories=False, image_size=32)
    rows = pd.read_csv(strange / "catalog.csv", dtype=str)
    rng = np.random.default_rng(0)
    for path in rows["image"]:  # photos and titles unlike anything the model learnt
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(strange / path)
    rows["title"] = [" ".join(rng.choice(list("qxzvjk"), 8)) for _ in range(len(rows))]
    rows.to_csv(strange / "catalog.csv", index=False)
    return catalog, drops


@pytest.fixture(scope="module")
def desk(shared_trained, folders):
    catalog, drops = folders
    return ReviewDesk(shared_trained, "test-model", catalog, drops, ValidateConfig(min_rows_per_class=1))


@pytest.fixture(scope="module")
def server(desk):
    import uvicorn

    from kickvision.review.app import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(desk), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "review server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _product(folders, i=0):
    catalog, _ = folders
    row = pd.read_csv(catalog / "catalog.csv", dtype=str).iloc[i]
    return row, (catalog / row["image"]).read_bytes()


def test_predict_answers_the_calibrated_category_with_its_explanation_and_similar_products(
    server, folders, shared_trained
):
    row, photo = _product(folders)
    reply = requests.post(
        f"{server}/api/predict", files={"image": ("shoe.png", photo)}, data={"title": row["title"], "k": "4"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # The same answer as the served model's predictor on the same photo and title.
    expected = ShoePredictor(shared_trained).predict_frame(
        pd.DataFrame({"image": [str(folders[0] / row["image"])], "title": [row["title"]]})
    )
    assert body["category"] == expected["category"][0]
    assert body["probability"] == pytest.approx(expected["probability"][0], abs=1e-5)
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert body["uncertain"] == (body["probability"] < body["threshold"])
    assert body["threshold"] == shared_trained.spec.review_threshold  # chosen on validation at release
    explanation = body["explanation"]
    assert set(explanation["overlays"]) == {"resnet18", "vit_tiny_patch16_224"}
    assert explanation["overlay_methods"] == {"resnet18": "Grad-CAM++", "vit_tiny_patch16_224": "patch occlusion"}
    for src in [explanation["photo"], *explanation["overlays"].values()]:
        assert src.startswith("data:image/png;base64,")
    assert [w["word"] for w in explanation["words"]] == row["title"].split()
    assert len(body["similar"]) == 4
    thumb = requests.get(server + body["similar"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size[0] <= 160


def test_predict_without_explanations_or_without_a_photo(server, folders):
    row, _ = _product(folders, 1)
    body = requests.post(f"{server}/api/predict", data={"title": row["title"], "explain": "false"}).json()
    assert "explanation" not in body and body["category"]
    body = requests.post(f"{server}/api/predict", data={"title": row["title"]}).json()
    assert body["explanation"]["overlays"] == {} and body["explanation"]["photo"] is None


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": {"image": ("x.png", b"not an image at all")}, "data": {"title": "a"}}, 400, "image:"),
        ({"data": {"title": "  "}}, 400, "give a photo, a title, or both"),
        ({"data": {"title": "shoe", "k": "-1"}}, 400, "k must be"),
        ({"data": {"title": "shoe", "image": "/etc/passwd"}}, 400, "uploaded file"),
        ({"files": {"image": ("big.png", b"0" * (ValidateConfig().max_image_bytes + 1))}}, 400, "bytes"),
        ({"files": {"image": ("huge.png", b"0" * (ValidateConfig().max_image_bytes + FORM_OVERHEAD))}}, 413, "large"),
    ],
    ids=["junk-bytes", "nothing", "negative-k", "a-path", "over-the-image-limit", "over-the-body-limit"],
)
def test_junk_gets_a_4xx_with_a_message_and_the_server_keeps_serving(server, request_kwargs, status, message):
    reply = requests.post(f"{server}/api/predict", **request_kwargs)
    assert reply.status_code == status and message in reply.json()["detail"]
    assert requests.post(f"{server}/api/predict", data={"title": "Running shoe"}).status_code == 200


def test_a_streamed_upload_over_the_limit_is_refused_without_a_declared_length(server):
    def chunks():  # a well-formed start, then more photo than the limit, with no Content-Length
        yield b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(ValidateConfig().max_image_bytes // 65536 + 4):
            yield b"0" * 65536

    reply = requests.post(
        f"{server}/api/predict", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert reply.status_code == 413
    assert requests.post(f"{server}/api/predict", data={"title": "Running shoe"}).status_code == 200


def test_paths_never_come_from_the_request(server, desk):
    assert requests.get(f"{server}/api/thumbnail/catalog/no-such-product").status_code == 404
    # Dots that reach the handlers (encoded slashes are decoded by the router before them).
    assert requests.get(f"{server}/api/thumbnail/drop:%2E%2E/x").status_code == 404
    assert requests.get(f"{server}/api/drops/%2E%2E").status_code == 404
    assert requests.get(f"{server}/api/drops/%2E").status_code == 404
    with pytest.raises(LookupError):  # the desk itself, below any router
        desk.drop_report("../catalog")
    # A page elsewhere cannot reach the desk through a DNS name that points at loopback.
    assert requests.get(f"{server}/api/about", headers={"Host": "evil.example"}).status_code == 400


def test_the_audit_ranks_the_catalog_and_decisions_go_to_the_corrections_file(server, folders):
    catalog, _ = folders
    before = (catalog / "catalog.csv").read_bytes()
    audit = requests.get(f"{server}/api/audit").json()
    valid = len(read_catalog(catalog).rows)
    assert audit["products"] + audit["quarantined"] == valid
    assert [r["rank"] for r in audit["rows"]] == list(range(1, len(audit["rows"]) + 1))
    first, second = audit["rows"][0], audit["rows"][1]
    other = next(c for c in set(r["category"] for r in audit["rows"]) if c != first["category"])
    decision = {"product_id": first["product_id"], "action": "relabel", "category": other, "reviewer": "test"}
    assert requests.post(f"{server}/api/corrections", json=decision).status_code == 201
    assert requests.post(f"{server}/api/corrections", json={**decision, "action": "confirm"}).status_code == 201
    assert (
        requests.post(f"{server}/api/corrections", json={"product_id": second["product_id"], "action": "exclude"})
    ).status_code == 201
    # Bad decisions: unknown action, unknown product, a cross-site form post (not JSON).
    assert requests.post(f"{server}/api/corrections", json={**decision, "action": "delete"}).status_code == 400
    assert requests.post(f"{server}/api/corrections", json={**decision, "product_id": "nope"}).status_code == 404
    assert requests.post(f"{server}/api/corrections", data=decision).status_code == 422
    cross_site = {"headers": {"Content-Type": "text/plain"}, "data": '{"product_id": "x", "action": "exclude"}'}
    assert requests.post(f"{server}/api/corrections", **cross_site).status_code == 422  # a form's only JSON-ish body
    typo = {**decision, "category": "Heelz"}  # would become a one-product category
    assert requests.post(f"{server}/api/corrections", json=typo).status_code == 400
    decisions = read_corrections(catalog).set_index("product_id")["action"]
    assert decisions[first["product_id"]] == "confirm" and decisions[second["product_id"]] == "exclude"
    assert (catalog / "catalog.csv").read_bytes() == before and (catalog / CORRECTIONS_FILE).is_file()
    reviewed = {r["product_id"]: r["reviewed"] for r in requests.get(f"{server}/api/audit?top=500").json()["rows"]}
    assert reviewed[first["product_id"]] == "confirm" and reviewed[second["product_id"]] == "exclude"


def test_catalog_text_cannot_run_script_on_the_page(server, folders, tmp_path, shared_trained):
    page = requests.get(f"{server}/")
    policy = page.headers["Content-Security-Policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page.text and "default-src 'self'" in policy
    assert requests.get(f"{server}/").headers["Content-Security-Policy"] != policy  # a new nonce each time
    # A product id made to break out of an attribute reaches the page only quoted.
    from kickvision.review.service import thumbnail_url

    url = thumbnail_url("catalog", 'x" onerror="alert(1)')
    assert '"' not in url and " " not in url


def test_a_catalog_row_whose_image_is_broken_has_no_thumbnail_but_no_error(server, folders):
    catalog, _ = folders
    rows = pd.read_csv(catalog / "catalog.csv", dtype=str)
    (catalog / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    broken = rows.iloc[[0]].assign(product_id="BROKEN", image="images/broken.png")
    pd.concat([rows, broken]).to_csv(catalog / "catalog.csv", index=False)
    try:
        assert requests.get(f"{server}/api/thumbnail/catalog/BROKEN").status_code == 404
    finally:
        rows.to_csv(catalog / "catalog.csv", index=False)


def test_a_drop_report_names_new_categories_disagreements_and_advice(server):
    assert requests.get(f"{server}/api/drops").json()["drops"] == ["drop-1", "drop-strange"]
    report = requests.get(f"{server}/api/drops/drop-1").json()
    drift = report["drift"]
    assert drift["new_categories"] == {"Loafers": 8}
    assert drift["advice"].startswith("update") and "1 new category" in drift["advice"]
    assert all(r["predicted"] != r["category"] for r in report["disagreements"])
    strange = requests.get(f"{server}/api/drops/drop-strange").json()["drift"]
    # Noise photos and gibberish titles: far from the catalog, or (a fused embedding trained to
    # separate categories may still place them near catalog products) the model disagrees with their
    # labels far more than on validation; which signal fires depends on the tiny model's training.
    far = strange["drift"] > max(drift["drift"], RETRAIN_DRIFT)
    disagrees = strange["agreement"] < strange["expected_agreement"] - AGREEMENT_DROP
    assert (far or disagrees) and strange["advice"].startswith("full retrain")
    assert ("lie far" in strange["advice"]) == far and ("agrees with" in strange["advice"]) == disagrees


def _clustered_index(rng, directions: np.ndarray, per_direction: int = 20):
    """A recommendation index of products in tight clusters around `directions` (half held out)."""
    from kickvision.model.index import EmbeddingIndex

    n = len(directions) * per_direction
    points = np.repeat(directions, per_direction, axis=0) + 0.05 * rng.standard_normal((n, directions.shape[1]))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    items = pd.DataFrame({"product_id": [f"c{i}" for i in range(n)], "split": ["train", "test"] * (n // 2)})
    return EmbeddingIndex(torch.from_numpy(points.astype(np.float32)), items)


def test_each_drift_signal_alone_advises_a_full_retrain_and_names_itself():
    from kickvision.review.drift import drift_report

    rng = np.random.default_rng(0)
    directions = np.eye(8)[:2]  # two categories, two clusters in 8 dimensions
    index, classes = _clustered_index(rng, directions), ["Boots", "Flats"]
    near = np.repeat(directions, 10, axis=0) + 0.05 * rng.standard_normal((20, 8))
    far = np.eye(8)[np.arange(20) % 6 + 2] + 0.05 * rng.standard_normal((20, 8))  # unlike any product
    labels = ["Boots"] * 10 + ["Flats"] * 10
    ids = [f"d{i}" for i in range(20)]

    def report(embeddings, predicted, categories=labels):
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        return drift_report(unit, ids, categories, predicted, index, classes, val_top1=0.9)

    familiar = report(near, labels)
    assert familiar.drift <= RETRAIN_DRIFT and familiar.advice.startswith("update")
    assert familiar.agreement == 1.0 and familiar.new_categories == {}

    moved = report(far, labels)  # the labels still agree: only the far signal fires
    assert moved.drift == 1.0 and moved.advice.startswith("full retrain")
    assert "lie far" in moved.advice and "agrees with" not in moved.advice

    relabelled = report(near, labels[10:] + labels[:10])  # familiar products, labels that mean something else
    assert relabelled.drift <= RETRAIN_DRIFT and relabelled.agreement == 0.0
    assert relabelled.advice.startswith("full retrain") and "agrees with" in relabelled.advice
    assert "lie far" not in relabelled.advice

    newcomers = report(far, labels, ["Loafers"] * 20)  # a new category is expected to be far
    assert newcomers.new_categories == {"Loafers": 20} and newcomers.known_products == 0
    assert newcomers.advice.startswith("update") and "1 new category" in newcomers.advice


def test_the_cli_serves_the_page_on_loopback(shared_trained, learnt_data, folders, mlflow_client):
    import os
    import subprocess
    import sys

    from kickvision.serve.pyfunc_logging import example_frame, log_pyfunc

    uri = log_pyfunc(shared_trained, example_frame(learnt_data)).model_uri
    port = free_port()
    cmd = [sys.executable, "-m", "kickvision.cli", "review", "--model-uri", uri, "--catalog", str(folders[0])]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        while f"http://127.0.0.1:{port}/" not in seen:  # (ZenML may say it initialises its config first)
            line = proc.stdout.readline()
            assert line, seen  # the command ended without serving
            seen += line
        for _ in range(100):
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert page.status_code == 200 and "kickvision review desk" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # works offline
        listening = [c for c in _listening(port) if c]
        assert listening and all(a.startswith("127.0.0.1") for a in listening)
    finally:
        proc.terminate()
        proc.wait(20)
    assert os.environ.get("ZENML_CONFIG_PATH")  # (the subprocess used the session's isolated state)


def _listening(port: int) -> list[str]:
    """Local addresses of sockets listening on `port` (from /proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_a_merchandiser_classifies_a_photo_and_accepts_an_audit_row_in_a_real_browser(server, folders, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(server + "/")
        wait.until(lambda b: "categories" in b.find_element(By.ID, "model").text)
        row, _ = _product(folders, 2)
        browser.find_element(By.ID, "image").send_keys(str(folders[0] / row["image"]))
        browser.find_element(By.ID, "title").send_keys(row["title"])
        browser.find_element(By.ID, "classify").click()
        wait.until(ec.visibility_of_element_located((By.ID, "category")))
        wait.until(lambda b: b.find_element(By.ID, "category").text)
        classes = requests.get(f"{server}/api/about").json()["classes"]
        assert browser.find_element(By.ID, "category").text in classes
        assert browser.find_element(By.ID, "flag").text in ("confident", "uncertain, needs review")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#overlays img")) == 3  # the photo + two branches
        captions = browser.find_element(By.ID, "overlays").text
        assert "Grad-CAM++ resnet18" in captions and "patch occlusion vit_tiny_patch16_224" in captions
        assert len(browser.find_elements(By.CSS_SELECTOR, "#similar img")) >= 1
        browser.save_screenshot(str(tmp_path / "classify.png"))

        browser.find_element(By.ID, "tab-audit").click()
        accept = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "#audit-table tbody tr:not(.done) button[data-act=confirm]"))
        )
        product = accept.find_element(By.XPATH, "./ancestor::tr").get_attribute("data-id")
        accept.click()
        wait.until(lambda b: product in set(read_corrections(folders[0])["product_id"]))
        assert read_corrections(folders[0]).set_index("product_id").at[product, "action"] == "confirm"
    finally:
        browser.quit()
