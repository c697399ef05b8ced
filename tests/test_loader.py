"""Training batches: the host loader and the batches cut on the training device carry the same products."""

import time
from dataclasses import replace

import numpy as np
import torch

from kickvision.model.net import build_model
from kickvision.train.engine import train_loop
from kickvision.train.loader import DeviceBatches, balanced_sampler, make_loader
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import LoopSettings


def test_batches_cut_on_the_device_hold_each_products_own_pixels_tokens_and_label_as_the_loaders_do(demo_data):
    rows = demo_data.indices("train")
    host = next(iter(make_loader(demo_data, rows, 8, 0, balanced=False)))
    cut = DeviceBatches(demo_data, rows, 8, 0, balanced=False, device="cpu")
    assert len(cut) == len(make_loader(demo_data, rows, 8, 0, balanced=False))
    labels = demo_data.labels()
    for batch in cut:
        assert {k: (v.dtype, v.shape[1:]) for k, v in batch.items()} == {
            k: (v.dtype, v.shape[1:]) for k, v in host.items()
        }
        j = batch["index"].numpy()
        assert np.array_equal(batch["image"].numpy(), demo_data.images[j])
        assert np.array_equal(batch["input_ids"].numpy(), demo_data.input_ids[j])
        assert np.array_equal(batch["attention_mask"].numpy(), demo_data.attention_mask[j])
        assert np.array_equal(batch["label"].numpy(), labels[j])


def test_a_shuffled_epoch_of_device_batches_visits_every_product_once_in_a_new_order_each_epoch(demo_data):
    rows = demo_data.indices("train")
    cut = DeviceBatches(demo_data, rows, 8, 0, balanced=False, device="cpu")
    epochs = [torch.cat([b["index"] for b in cut]).numpy() for _ in range(2)]
    whole = len(rows) // 8 * 8  # the last, short batch is dropped, as the loader does
    for seen in epochs:
        assert len(seen) == whole and len(set(seen)) == whole and set(seen) <= set(rows)
    assert not np.array_equal(epochs[0], epochs[1])
    again = torch.cat([b["index"] for b in DeviceBatches(demo_data, rows, 8, 0, False, "cpu")]).numpy()
    assert np.array_equal(again, epochs[0])  # seeded: the same run draws the same order


def test_device_batches_come_in_the_host_loaders_order_epoch_after_epoch_shuffled_balanced_or_at_a_power(demo_data):
    rows = demo_data.indices("train")
    orders = {}
    for balanced in (False, True, 0.5):
        host = make_loader(demo_data, rows, 8, 3, balanced=balanced)
        cut = DeviceBatches(demo_data, rows, 8, 3, balanced=balanced, device="cpu")
        for epoch in range(2):
            orders[balanced, epoch] = [b["index"].tolist() for b in host]
            assert orders[balanced, epoch] == [b["index"].tolist() for b in cut]
    assert orders[0.5, 0] != orders[True, 0]  # the power reaches the sampler, not only whether to balance


def test_balanced_device_batches_draw_every_class_about_equally_however_rare(demo_data):
    rows = demo_data.indices("train")
    labels = demo_data.labels()
    rare = labels[rows] == labels[rows][0]
    skewed = np.concatenate([rows[rare][:2], rows[~rare]])  # one class down to two products
    cut = DeviceBatches(demo_data, skewed, 8, 0, balanced=True, device="cpu")
    drawn = np.concatenate([labels[b["index"].numpy()] for _ in range(20) for b in cut])
    counts = np.bincount(drawn, minlength=len(demo_data.classes))[np.unique(labels[skewed])]
    assert counts.min() / counts.max() > 0.6, counts


def test_a_loop_on_device_batches_through_torch_compile_trains_the_models_own_weights(tiny_config, demo_data):
    """The compiled wrapper shares the model's weights: the model comes back trained, plain (its own
    state-dict keys, no compiled forward left behind) and predicts as any model does."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    called_with = []

    def forward(runner, batch):
        called_with.append(type(runner).__name__)
        return runner(batch["image"], batch["input_ids"], batch["attention_mask"])

    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, data_on_device=True, compile=True)
    rows = demo_data.indices("train")[:32]
    started = time.perf_counter()
    result = train_loop(model, demo_data, rows, settings, loss, lambda m: {}, progress=False, forward=forward)
    print(f"compiled loop: {time.perf_counter() - started:.1f} s")
    assert called_with == ["OptimizedModule"] * 2 and result.history[0]["train_loss"] > 0
    assert model.state_dict().keys() == start.keys() and type(model).__name__ == "MultimodalShoeNet"
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    plain = train_loop(
        model, demo_data, rows, replace(settings, compile=False), loss, lambda m: {}, progress=False, forward=forward
    )
    assert called_with[2:] == ["MultimodalShoeNet"] * 2 and plain.history


def test_with_balanced_sampling_a_loop_on_device_batches_trains_exactly_as_on_the_host_loader(tiny_config, demo_data):
    """Both draw the epoch's order from the same seeded sampler: the same batches, the same weights."""
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    rows = demo_data.indices("train")
    trained = []
    for on_device in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_config.model, len(demo_data.classes))
        settings = LoopSettings(
            epochs=2, batch_size=8, lr=0.01, monitor=None, balanced_sampling=True, data_on_device=on_device
        )
        train_loop(model, demo_data, rows, settings, loss, lambda m: {}, progress=False)
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_a_sampling_power_draws_each_class_in_proportion_to_its_count_to_one_minus_the_power(demo_data):
    """1 / count^x per product: class-balanced at 1 (exactly the weights before the power existed), square-root
    sampling at 0.5; and the sampler draws by those weights."""
    labels = demo_data.labels()
    train = demo_data.indices("train")
    common, rare = (train[labels[train] == c] for c in (0, 1))
    rows = np.concatenate([common, rare[: len(common) // 4]])  # one class four times as common as the other
    counts = np.array([len(common), len(common) // 4])
    for power in (1.0, 0.5, 0.25):
        weights = balanced_sampler(demo_data, rows, 0, power).weights.numpy()
        share = np.array([weights[labels[rows] == c].sum() for c in (0, 1)]) / weights.sum()
        expected = counts ** (1 - power) / (counts ** (1 - power)).sum()
        assert np.allclose(share, expected), (power, share, expected)
    assert np.array_equal(balanced_sampler(demo_data, rows, 0).weights.numpy(), 1.0 / counts[labels[rows]])
    many = np.tile(rows, 2000)  # ~40,000 draws: the share's standard error is ~0.0025
    drawn = labels[many[np.array(list(balanced_sampler(demo_data, many, 0, 0.5)))]]
    assert abs((drawn == 1).mean() - np.sqrt(counts[1]) / np.sqrt(counts).sum()) < 0.01
