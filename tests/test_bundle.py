"""The model bundle: pickle-free round trips, a typed spec, old bundles still loading, and serving
that sees exactly the pixels and tokens training saw."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kickvision.data.images import open_image_bounded
from kickvision.evaluate.calibration import softmax
from kickvision.model.bundle import SPEC_FILE, PhotoPretrainingRecord, load_bundle, save_bundle
from kickvision.model.predict import predict_logits
from kickvision.model.shapes import changed_shapes
from kickvision.serve.predictor import ShoePredictor
from kickvision.train.engine import generic_pretrained_encoders
from kickvision.train.prune import prune_structured
from tests.conftest import as_format_1


def test_bundle_round_trip_gives_identical_outputs_spec_index_and_memory(shared_trained, learnt_data, tmp_path):
    folder = save_bundle(shared_trained, tmp_path / "bundle")
    assert not [p for p in folder.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".pickle")]
    loaded = load_bundle(folder)
    assert loaded.spec == shared_trained.spec
    idx = learnt_data.indices("test")
    before, before_emb = predict_logits(shared_trained.model, learnt_data, idx)
    after, after_emb = predict_logits(loaded.model, learnt_data, idx)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(before_emb, after_emb)
    assert torch.equal(loaded.index.embeddings, shared_trained.index.embeddings)
    assert len(loaded.continual.replay) == len(shared_trained.continual.replay)


def test_a_loaded_model_knows_which_encoders_started_pretrained_and_the_optimizer_groups_them_as_the_fit_did(
    shared_trained, tmp_path
):
    bundle = copy.copy(shared_trained)
    bundle.spec = shared_trained.spec.model_copy(deep=True)
    encoders = bundle.model.pretrained_report()
    image_keys = [k for k in encoders if k.startswith("image_")]
    bundle.spec.training.pretrained = dict.fromkeys(encoders, True)  # as if all had started pretrained
    bundle.spec.lineage.photo_pretraining = PhotoPretrainingRecord(method="labels", catalog_hash="c", epochs=1)
    loaded = load_bundle(save_bundle(bundle, tmp_path / "pretrained")).model
    assert loaded.pretrained_report() == dict.fromkeys(encoders, True)
    # the photo encoders were pretrained on the catalog's own photos: only MiniLM is "generic"
    assert generic_pretrained_encoders(loaded) == [loaded.text_encoder]

    bundle.spec.training.pretrained = {image_keys[0]: True}  # generic ImageNet weights, no photo pretraining
    bundle.spec.lineage.photo_pretraining = None
    loaded = load_bundle(save_bundle(bundle, tmp_path / "imagenet")).model
    assert generic_pretrained_encoders(loaded) == [loaded.image_encoders[0]]
    assert not loaded.text_encoder.pretrained_loaded


def test_serving_sees_the_pixels_and_tokens_training_saw(shared_trained, learnt_data):
    idx = learnt_data.indices("test")[:6]
    rows = learnt_data.rows_with_image_paths(idx)
    predictor = ShoePredictor(shared_trained)
    photos = [open_image_bounded(p) for p in rows["image"]]
    served, _ = predictor.forward(photos, rows["title"].tolist())
    logits, _ = predict_logits(shared_trained.model, learnt_data, idx)
    np.testing.assert_allclose(served, softmax(logits, shared_trained.spec.temperature), atol=1e-5)

    frame = pd.DataFrame({"image": rows["image"].tolist(), "title": rows["title"].tolist()})
    predicted = predictor.predict_frame(frame)
    assert predicted["category"].tolist() == [shared_trained.classes[i] for i in logits.argmax(1)]
    by_frame = [[p[c] for c in shared_trained.classes] for p in predicted["probabilities"]]
    np.testing.assert_allclose(by_frame, served, atol=1e-6)  # letterboxed on reading = letterboxed in the batch
    title_only = predictor.predict_frame(pd.DataFrame({"title": ["Stride Women Black Heels"]}))
    assert title_only["category"].iloc[0] in shared_trained.classes


def test_a_format_1_bundle_with_an_untyped_info_dict_still_loads(shared_trained, learnt_data, tmp_path):
    pruned = copy.deepcopy(shared_trained)
    prune_structured(pruned.model, ratio=0.5, head_ratio=0.5, round_to=None)
    pruned.spec.pruned_shapes = changed_shapes(pruned.model, shared_trained.model)
    folder = save_bundle(pruned, tmp_path / "old")
    as_format_1(folder, {"ratio": 0.5, "finetune_epochs": 2, "prune_val_top1_after": 0.5})

    loaded = load_bundle(folder)
    spec = loaded.spec
    assert spec.classes == shared_trained.classes and spec.temperature == shared_trained.spec.temperature
    assert spec.pruned_shapes == pruned.spec.pruned_shapes
    assert spec.pruning.ratio == 0.5 and spec.pruning.metrics == {"prune_val_top1_after": 0.5}
    assert spec.training.best_epoch == shared_trained.spec.training.best_epoch
    assert spec.training.best_score == pytest.approx(shared_trained.spec.training.best_score)
    assert spec.lineage.catalog_hash == learnt_data.catalog_hash and spec.lineage.updated_from is None
    assert (loaded.continual.fisher_samples, loaded.continual.replay_selection) == (7, "random")
    idx = learnt_data.indices("test")
    np.testing.assert_array_equal(
        predict_logits(loaded.model, learnt_data, idx)[0], predict_logits(pruned.model, learnt_data, idx)[0]
    )


def test_an_unknown_bundle_format_is_refused(shared_trained, tmp_path):
    folder = save_bundle(shared_trained, tmp_path / "future")
    document = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**document, "format_version": 99}))
    with pytest.raises(ValueError, match="unsupported bundle format 99"):
        load_bundle(folder)


def test_a_server_opens_photos_only_under_its_image_root_and_never_says_which_files_exist(
    shared_trained, learnt_data, tmp_path
):
    from kickvision.serve.predictor import decode_image_field
    from kickvision.serve.pyfunc_logging import image_to_base64

    photo = learnt_data.rows_with_image_paths(learnt_data.indices("test")[:1])["image"].iloc[0]
    root = Path(photo).parent
    assert decode_image_field(str(photo), paths=root).size == decode_image_field(str(photo)).size
    as_bytes = image_to_base64(photo)
    assert decode_image_field(as_bytes, paths=None) is not None  # bytes are always fine
    for refused in ("/etc/hostname", "/no/such/file.png", str(root / ".." / ".." / "x.png"), "relative.png"):
        with pytest.raises(ValueError, match="not under the server's image root"):
            decode_image_field(refused, paths=root)
        with pytest.raises(ValueError, match="takes no file paths"):
            decode_image_field(refused, paths=None)
    served = ShoePredictor(shared_trained, image_paths=None)
    with pytest.raises(ValueError, match="takes no file paths"):
        served.predict_frame(pd.DataFrame({"image": [str(photo)], "title": ["x"]}))
    assert len(served.predict_frame(pd.DataFrame({"image": [as_bytes], "title": ["x"]}))) == 1


def test_links_out_of_the_image_root_odd_cells_and_long_bytes_are_bad_cells_not_crashes(tmp_path):
    from PIL import Image

    from kickvision.serve.predictor import decode_image_field
    from kickvision.serve.pyfunc_logging import photos_as_bytes

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir(), elsewhere.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(elsewhere / "secret.png")
    Image.new("RGB", (8, 8), (0, 200, 0)).save(root / "shoe.png")
    (root / "link.png").symlink_to(elsewhere / "secret.png")  # inside by name, outside in fact
    (root / "loop.png").symlink_to(root / "loop.png")
    assert decode_image_field(str(root / "shoe.png"), paths=root).getpixel((0, 0)) == (0, 200, 0)
    with pytest.raises(ValueError, match="not under the server's image root"):
        decode_image_field(str(root / "link.png"), paths=root)
    with pytest.raises(ValueError, match="not found under the image root"):
        decode_image_field(str(root / "loop.png"), paths=root)
    with pytest.raises(ValueError, match="not under the server's image root"):
        decode_image_field(str(root / ".." / "elsewhere" / "secret.png"), paths=root)
    assert decode_image_field(pd.NA) is None and decode_image_field(float("nan")) is None
    with pytest.raises(ValueError):
        decode_image_field("data:image/png;base64", paths=None)  # no comma: a bad cell, not an IndexError
    big = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    frame = photos_as_bytes(pd.DataFrame({"image": [str(tmp_path / "big.png")], "title": ["x"]}))
    assert len(frame.at[0, "image"]) > 4096
    assert photos_as_bytes(frame).equals(frame)  # already bytes: left alone, no "file name too long"
    assert decode_image_field(frame.at[0, "image"]).size == (300, 300)


def test_a_request_holds_its_photos_at_the_model_input_size_not_as_sent(shared_trained, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (200, 30, 30)).save(big)
    predictor = ShoePredictor(shared_trained)
    images, _ = predictor.read_frame(pd.DataFrame({"image": [str(big)] * 3 + [""], "title": ["Red Heels"] * 4}))
    height, width = predictor.transform.hw
    assert [None if i is None else i.shape for i in images] == [(height, width, 3)] * 3 + [None]
