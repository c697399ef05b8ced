"""Do the image maps (Grad-CAM++, patch occlusion) explain the model? ROAD scores against random maps of the same size.

ROAD (Rong et al. 2022, pytorch-grad-cam's `ROADCombined`, computed by `road_combined`): remove the
pixels a map calls most relevant (and, separately, least relevant) by noisy linear imputation, at
several percentiles, and watch the target class probability: a faithful map makes it fall when its
top pixels go and hold when its bottom pixels go. The combined score (LeRF - MoRF) / 2 is higher
for a more faithful map; the same score for uniform random maps is the floor a real map must clear.

Each product is scored twice: with its title held fixed (the fused prediction a user sees, where a
confident title leaves the photo little to move) and with the title hidden (`_photo_only`: what the
photo branches decide on their own, where the maps have something to explain). A branch's margin
over random maps is judged per product (paired: the same products; a product's random map is imputed
once and scored in both conditions), as the mean difference over its standard error (`..._margin_se`;
>= 3 is a margin noise does not make).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.cam import branch_family, branch_maps, explain_methods
from kickvision.evaluate.explain import ImageOnlyInput
from kickvision.model.bundle import ModelBundle

PERCENTILES = (20, 40, 60, 80)


def road_scores(
    bundle: ModelBundle, data: PreparedData, split: str = "test", n: int = 32, seed: int = 0
) -> Iterator[tuple[int, dict[str, float]]]:
    """(row, ROAD scores) for each of up to `n` products of `split` (a fixed permutation seeded with `seed`, so a
    larger `n` extends a smaller one), one at a time. ROAD's imputation noise (drawn on the CPU) comes from a
    torch generator seeded with `seed` and carried from product to product, the random maps from a numpy one, so
    the scores repeat run to run and equal one uninterrupted loop's; the caller's global generator is left as it
    was between products."""
    model = bundle.model.eval()
    if not model.image_encoders:
        return
    transform = bundle.image_transform()
    chosen = np.random.default_rng(seed).permutation(data.indices(split))[:n]
    rng, torch_state = np.random.default_rng(seed), None
    for j in chosen:
        with torch.random.fork_rng(devices=[]):  # the CPU generator: the imputer draws on the CPU
            if torch_state is None:
                torch.manual_seed(seed)
            else:
                torch.set_rng_state(torch_state)
            scores = _road_scores(model, data, int(j), transform, rng)
            torch_state = torch.get_rng_state()
        yield int(j), scores


def cam_faithfulness(
    bundle: ModelBundle, data: PreparedData, split: str = "test", n: int = 32, seed: int = 0
) -> dict[str, float]:
    """Mean ROAD score per image branch and for random maps, over up to `n` products of `split` (`road_scores`).

    Metric names: `cam_faithfulness_<resnet|vit|random>` with the title fixed and
    `cam_faithfulness_<resnet|vit|random>_photo_only` with it hidden (all on the same scale: a
    difference of target-class probabilities), `_std` of each across products, and each branch's
    paired margin over random maps in standard errors, `cam_faithfulness_<family>[_photo_only]_margin_se`.
    A product's random map and its imputed photos are the same in both conditions: imputed once, scored twice.
    """
    if not bundle.model.image_encoders:
        return {}
    scores: dict[str, list[float]] = {}
    for _, product in road_scores(bundle, data, split, n, seed):
        for key, score in product.items():
            scores.setdefault(key, []).append(score)
    if not scores:
        return {"cam_faithfulness_products": 0.0}
    return faithfulness_metrics(bundle, scores)


def faithfulness_metrics(bundle: ModelBundle, scores: dict[str, list[float]]) -> dict[str, float]:
    """`cam_faithfulness`'s metrics from per-product ROAD scores (each key's list in the same product order; at
    least one product)."""
    model = bundle.model
    metrics = {}
    for key, values in scores.items():
        metrics[f"cam_faithfulness_{key}"] = float(np.mean(values))
        metrics[f"cam_faithfulness_{key}_std"] = float(np.std(values))
    families = [key for key in scores if key in {branch_family(n.split("_", 1)[1]) for n in explain_methods(model)}]
    for condition in CONDITIONS:
        random = np.array(scores[f"random{condition}"])
        for family in families:
            margin = paired_margin_se(np.array(scores[f"{family}{condition}"]), random)
            metrics[f"cam_faithfulness_{family}{condition}_margin_se"] = margin
    metrics["cam_faithfulness_products"] = float(len(next(iter(scores.values()))))
    return metrics


# metric-name suffix -> whether the title is hidden
CONDITIONS = {"": False, "_photo_only": True}


def paired_margin_se(branch: np.ndarray, random: np.ndarray) -> float:
    """Mean of (branch - random) per product over its standard error; NaN below two products or
    when the differences do not vary."""
    differences = branch - random
    if len(differences) < 2:
        return float("nan")
    se = differences.std(ddof=1) / np.sqrt(len(differences))
    return float(differences.mean() / se) if se > 0 else float("nan")


def _road_scores(model, data: PreparedData, j: int, transform, rng) -> dict[str, float]:
    """Product j's ROAD score for each branch's map (kickvision/evaluate/cam.py) and for a random map,
    in each condition (title fixed, title hidden). The random map does not depend on the condition, so
    its imputations (a third of ROAD's cost with two branches) are drawn once and put through both."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ids = torch.from_numpy(data.input_ids[j : j + 1])
    mask = torch.from_numpy(data.attention_mask[j : j + 1])
    images = transform.normalise(data.images[j : j + 1])
    blank = transform.blank_input()
    random_map = rng.random(images.shape[-2:], dtype=np.float32)
    random_imputed = road_imputations(images, random_map[None])
    scores = {}
    for condition, hide_title in CONDITIONS.items():
        wrapper = ImageOnlyInput(model, ids, mask, text_present=torch.zeros(1) if hide_title else None)
        with torch.no_grad():
            target = int(wrapper(images).argmax(1))
        cam_target = ClassifierOutputSoftmaxTarget(target)
        by_branch = branch_maps(model, wrapper, images, blank, target, cam_target)
        families = [branch_family(name.split("_", 1)[1]) for name in by_branch]
        cams = np.stack(list(by_branch.values()))
        imputed = torch.cat([road_imputations(images.expand(len(cams), -1, -1, -1), cams), random_imputed], dim=2)
        road = road_from_imputations(imputed, [cam_target] * (len(cams) + 1), wrapper)
        scores |= {f"{key}{condition}": score for key, score in zip([*families, "random"], road.tolist(), strict=True)}
    return scores


def road_combined(images: torch.Tensor, cams: np.ndarray, targets, model) -> np.ndarray:
    """pytorch-grad-cam's `ROADCombined` score, (LeRF - MoRF) / 2 over PERCENTILES, per image, in one forward.

    The library scores each percentile and direction with a forward of its own, and the unperturbed
    photos again each time, though that score cancels in (LeRF - MoRF) / 2. Here its imputations
    (`road_imputations`, in the library's order) all go through the model in one batch: one forward
    per call instead of 4 x len(PERCENTILES)."""
    return road_from_imputations(road_imputations(images, cams), targets, model)


def road_imputations(images: torch.Tensor, cams: np.ndarray) -> torch.Tensor:
    """ROAD's imputed photos, shape (2, len(PERCENTILES), len(images), C, H, W): the least relevant pixels
    removed at each percentile, then the most relevant (`metric.perturbation`), drawn in the library's
    order (LeRF at each percentile, then MoRF; the batch within each), on the images' device."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    perturbed = [
        torch.stack(
            [
                metric(p).perturbation(image.cpu(), torch.from_numpy(cam))
                for image, cam in zip(images, cams, strict=True)
            ]
        )
        for metric in (ROADLeastRelevantFirst, ROADMostRelevantFirst)
        for p in PERCENTILES
    ]
    return torch.stack(perturbed).unflatten(0, (2, len(PERCENTILES))).to(images.device)


def road_from_imputations(imputed: torch.Tensor, targets, model) -> np.ndarray:
    """The combined ROAD score per image of `road_imputations`' photos (one target per image), in one forward."""
    directions, percentiles, n = imputed.shape[:3]
    with torch.no_grad():
        outputs = model(imputed.flatten(0, 2))
    scores = np.float32(
        [
            target(output).cpu().numpy()
            for target, output in zip(targets * directions * percentiles, outputs, strict=True)
        ]
    )
    lerf, morf = scores.reshape(directions, percentiles, n).mean(1)
    return (lerf - morf) / 2
