"""Do the Grad-CAM++ maps explain the model? ROAD scores against random maps of the same size.

ROAD (Rong et al. 2022, pytorch-grad-cam's `ROADCombined`): remove the pixels a map calls most
relevant (and, separately, least relevant) by noisy linear imputation, at several percentiles, and
watch the target class probability: a faithful map makes it fall when its top pixels go and hold
when its bottom pixels go. The combined score (LeRF - MoRF) / 2 is higher for a more faithful map;
the same score for uniform random maps is the floor a real map must clear. Titles are held fixed,
so the scores are about the photo branches of the fused model.
"""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.cam import branch_family, cam_targets
from kickvision.evaluate.explain import ImageOnlyInput
from kickvision.model.bundle import ModelBundle

PERCENTILES = (20, 40, 60, 80)


def cam_faithfulness(
    bundle: ModelBundle, data: PreparedData, split: str = "test", n: int = 32, seed: int = 0
) -> dict[str, float]:
    """Mean ROAD score per image branch and for random maps, over up to `n` products of `split`.

    Metric names: `cam_faithfulness_<resnet|vit>` and `cam_faithfulness_random` (all on the
    same scale: a difference of target-class probabilities), plus `_std` of each across products.
    ROAD's imputation noise is drawn from a generator seeded with `seed`, so the scores repeat run to
    run (the global generator is left as it was).
    """
    from pytorch_grad_cam.metrics.road import ROADCombined

    model = bundle.model.eval()
    if not model.image_encoders:
        return {}
    transform = bundle.image_transform()
    indices = data.indices(split)
    chosen = np.random.default_rng(seed).permutation(indices)[:n]
    road = ROADCombined(percentiles=list(PERCENTILES))
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for j in chosen:
            for key, score in _road_scores(model, data, int(j), transform, road, rng).items():
                scores.setdefault(key, []).append(score)
    metrics = {}
    for key, values in scores.items():
        metrics[f"cam_faithfulness_{key}"] = float(np.mean(values))
        metrics[f"cam_faithfulness_{key}_std"] = float(np.std(values))
    metrics["cam_faithfulness_products"] = float(len(chosen))
    return metrics


def _road_scores(model, data: PreparedData, j: int, transform, road, rng) -> dict[str, float]:
    """Product j's ROAD score for each branch's Grad-CAM++ map and for a random map."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ids = torch.from_numpy(data.input_ids[j : j + 1])
    mask = torch.from_numpy(data.attention_mask[j : j + 1])
    images = transform.normalise(data.images[j : j + 1])
    wrapper = ImageOnlyInput(model, ids, mask)
    with torch.no_grad():
        target = int(wrapper(images).argmax(1))
    targets = [ClassifierOutputSoftmaxTarget(target)]
    maps = {}
    for name, (layer, reshape) in cam_targets(model).items():
        with GradCAMPlusPlus(model=wrapper, target_layers=[layer], reshape_transform=reshape) as cam:
            maps[branch_family(name.split("_", 1)[1])] = cam(input_tensor=images, targets=targets)
    maps["random"] = rng.random((1, *images.shape[-2:]), dtype=np.float32)
    return {key: float(road(images, grayscale, targets, wrapper)[0]) for key, grayscale in maps.items()}
