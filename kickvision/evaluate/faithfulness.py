"""Do the image maps (Grad-CAM++, patch occlusion) explain the model? ROAD scores against random maps of the same size.

ROAD (Rong et al. 2022, pytorch-grad-cam's `ROADCombined`, computed by `road_combined`): remove the
pixels a map calls most relevant (and, separately, least relevant) by noisy linear imputation, at
several percentiles, and watch the target class probability: a faithful map makes it fall when its
top pixels go and hold when its bottom pixels go. The combined score (LeRF - MoRF) / 2 is higher
for a more faithful map; the same score for uniform random maps is the floor a real map must clear.

Each product is scored twice: with its title held fixed (the fused prediction a user sees, where a
confident title leaves the photo little to move) and with the title hidden (`_photo_only`: what the
photo branches decide on their own, where the maps have something to explain). A branch's margin
over random maps is judged per product (paired: the same products, the same imputation noise), as
the mean difference over its standard error (`..._margin_se`; >= 3 is a margin noise does not make).
"""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.cam import branch_family, branch_maps, explain_methods
from kickvision.evaluate.explain import ImageOnlyInput
from kickvision.model.bundle import ModelBundle

PERCENTILES = (20, 40, 60, 80)


def cam_faithfulness(
    bundle: ModelBundle, data: PreparedData, split: str = "test", n: int = 32, seed: int = 0
) -> dict[str, float]:
    """Mean ROAD score per image branch and for random maps, over up to `n` products of `split`.

    Metric names: `cam_faithfulness_<resnet|vit|random>` with the title fixed and
    `cam_faithfulness_<resnet|vit|random>_photo_only` with it hidden (all on the same scale: a
    difference of target-class probabilities), `_std` of each across products, and each branch's
    paired margin over random maps in standard errors, `cam_faithfulness_<family>[_photo_only]_margin_se`.
    ROAD's imputation noise is drawn from a generator seeded with `seed`, so the scores repeat run to
    run (the global generator is left as it was).
    """
    model = bundle.model.eval()
    if not model.image_encoders:
        return {}
    transform = bundle.image_transform()
    indices = data.indices(split)
    chosen = np.random.default_rng(seed).permutation(indices)[:n]
    if not len(chosen):
        return {"cam_faithfulness_products": 0.0}
    scores: dict[str, list[float]] = {}
    for condition, hide_title in CONDITIONS.items():
        rng = np.random.default_rng(seed)  # the same random maps and imputation noise in each condition
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for j in chosen:
                for key, score in _road_scores(model, data, int(j), transform, rng, hide_title).items():
                    scores.setdefault(f"{key}{condition}", []).append(score)
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
    metrics["cam_faithfulness_products"] = float(len(chosen))
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


def _road_scores(model, data: PreparedData, j: int, transform, rng, hide_title: bool) -> dict[str, float]:
    """Product j's ROAD score for each branch's map (kickvision/evaluate/cam.py) and for a random map."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ids = torch.from_numpy(data.input_ids[j : j + 1])
    mask = torch.from_numpy(data.attention_mask[j : j + 1])
    images = transform.normalise(data.images[j : j + 1])
    wrapper = ImageOnlyInput(model, ids, mask, text_present=torch.zeros(1) if hide_title else None)
    with torch.no_grad():
        target = int(wrapper(images).argmax(1))
    targets = [ClassifierOutputSoftmaxTarget(target)]
    blank = transform.blank_input()
    by_branch = branch_maps(model, wrapper, images, blank, target, targets[0])
    maps = {branch_family(name.split("_", 1)[1]): cam for name, cam in by_branch.items()}
    maps["random"] = rng.random(images.shape[-2:], dtype=np.float32)
    scores = road_combined(
        images.expand(len(maps), -1, -1, -1), np.stack(list(maps.values())), targets * len(maps), wrapper
    )
    return dict(zip(maps, scores.tolist(), strict=True))


def road_combined(images: torch.Tensor, cams: np.ndarray, targets, model) -> np.ndarray:
    """pytorch-grad-cam's `ROADCombined` score, (LeRF - MoRF) / 2 over PERCENTILES, per image, in one forward.

    The library scores each percentile and direction with a forward of its own, and the unperturbed
    photos again each time, though that score cancels in (LeRF - MoRF) / 2. Here its imputations
    (`metric.perturbation`) are drawn in the library's order (LeRF at each percentile, then MoRF; the
    batch within each), and every perturbed photo goes through the model in one batch: one forward per
    call instead of 4 x len(PERCENTILES)."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    perturbed = [
        metric(p).perturbation(image.cpu(), torch.from_numpy(cam))
        for metric in (ROADLeastRelevantFirst, ROADMostRelevantFirst)
        for p in PERCENTILES
        for image, cam in zip(images, cams, strict=True)
    ]
    with torch.no_grad():
        outputs = model(torch.stack(perturbed).to(images.device))
    scores = np.float32(
        [target(output).cpu().numpy() for target, output in zip(targets * 2 * len(PERCENTILES), outputs, strict=True)]
    )
    lerf, morf = scores.reshape(2, len(PERCENTILES), len(images)).mean(1)
    return (lerf - morf) / 2
