"""What ROAD costs per product: pytorch-grad-cam's `ROADCombined` on the whole fused model vs kickvision's
`road_combined` on the explainer's wrapper (and the one before it), side by side in one process, with the
scores compared.

- the library's metric through a wrapper that runs every branch on every call (the title through the
  text encoder too): a forward per percentile and direction, and of the unperturbed photos each time;
- per map and percentile (how the evaluate step scored on 2026-12-02, kickvision's `road_combined` then):
  the library's per-percentile metrics with `return_diff=False` (the unperturbed forwards cancel in
  (LeRF - MoRF) / 2) on the wrapper that reads the title once, called once per map; its imputation noise
  is drawn in another order, so its scores differ from the other two by noise, and are not compared;
- kickvision's `road_combined`: the same imputations, every perturbed photo in one forward;
- as the evaluate step scores since 2026-12-07 (`cam_faithfulness`): `road_combined`'s forward, with the
  random map's imputations drawn once per product and put through both title conditions (the branch maps'
  noise then comes in another order in the second condition, so its scores are not compared).

The maps the step scores are timed too, as `branch_maps` makes them (Grad-CAM++ of the CNN, the ViT's
patch occlusion with the other image encoders run on one copy of the photo) against the occlusion as
it was before 2026-12-07 (every image encoder on every occluded row), and their largest difference.
A model of part of the catalog (the continual benchmark's base model) is scored on its categories'
products: ROAD reads no label.

Each product is scored as the evaluate step scores it: title fixed and hidden, each image branch's map
and a random map (as one batch but for the per-map way), the same imputation noise for every way
(seeded), after one product scored untimed by every way (warm-up). Prints seconds per product, the
ratios and the largest score difference; writes JSON.

    .venv/bin/python benchmarks/road_cost.py --catalog ../shared/data/fashion-footwear --config fashion \
        --model DIR --products 4 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import data_for_model, prepared_catalog, write_result
from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from kickvision.config import load_config
from kickvision.evaluate.cam import branch_maps, cnn_maps, explain_methods, is_vit, patch_occlusion
from kickvision.evaluate.explain import ImageOnlyInput
from kickvision.evaluate.faithfulness import PERCENTILES, road_combined, road_from_imputations, road_imputations

REFERENCE, BEFORE, OURS = "ROADCombined, whole model", "per map and percentile (before)", "road_combined, one forward"
ONCE = "road_combined, the random map imputed once for both conditions"
MAPS_BEFORE, MAPS = "maps, occlusion on every image encoder (before)", "maps, branch_maps"


def maps_before(model, wrapper, images, blank, target, cam_target) -> dict[str, np.ndarray]:
    """`branch_maps` as it was before 2026-12-07: the ViT's occlusion rows through every image encoder."""
    maps = cnn_maps(model, wrapper, images, cam_target)
    for name, encoder in zip(explain_methods(model), model.image_encoders, strict=True):
        if is_vit(encoder):
            maps[name] = patch_occlusion(wrapper, encoder, images, blank, target)[0]
    return {name: maps[name] for name in explain_methods(model)}


def per_map_and_percentile(images: torch.Tensor, cams: np.ndarray, targets, model) -> np.ndarray:
    """The evaluate step's ROAD as of 2026-12-02: each map on its own, one forward per percentile and
    direction, none of the unperturbed photos."""

    def mean_after(metric, i: int) -> np.ndarray:
        args = images[i : i + 1], cams[i : i + 1], targets[i : i + 1], model
        return np.mean([metric(p)(*args, return_diff=False) for p in PERCENTILES], axis=0)

    return np.concatenate(
        [(mean_after(ROADLeastRelevantFirst, i) - mean_after(ROADMostRelevantFirst, i)) / 2 for i in range(len(images))]
    )


class WholeModel(ImageOnlyInput):
    """The fused model as a function of the photo, every branch run on every call."""

    def __init__(self, model, input_ids, attention_mask, text_present=None):
        torch.nn.Module.__init__(self)  # not ImageOnlyInput's: nothing read ahead
        self.model, self.input_ids, self.attention_mask, self.text_present = (
            model,
            input_ids,
            attention_mask,
            text_present,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        present = None if self.text_present is None else self.text_present.expand(n)
        ids, mask = self.input_ids.expand(n, -1), self.attention_mask.expand(n, -1)
        return self.model(images, ids, mask, text_present=present).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--config", default="fashion")
    parser.add_argument("--model", required=True, help="a saved bundle folder trained with --config on --catalog")
    parser.add_argument("--products", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/road_cost_<catalog>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from kickvision.model.bundle import load_bundle

    cfg = load_config(args.config)
    data, _, name = prepared_catalog(args.catalog, cfg)
    bundle = load_bundle(args.model)
    known = data.rows["category"].isin(bundle.classes).to_numpy()
    if known.all():
        data = data_for_model(data, bundle, cfg)
    model, transform = bundle.model.eval(), bundle.image_transform()
    test = np.intersect1d(data.indices("test"), np.flatnonzero(known))
    chosen = np.random.default_rng(cfg.seed).permutation(test)[: args.products + 1]
    seconds, differences = dict.fromkeys((MAPS_BEFORE, MAPS, REFERENCE, BEFORE, OURS, ONCE), 0.0), []
    map_differences = []
    for warm_up, j in zip([True] + [False] * args.products, chosen, strict=False):
        ids, mask = torch.from_numpy(data.input_ids[j : j + 1]), torch.from_numpy(data.attention_mask[j : j + 1])
        images = transform.normalise(data.images[j : j + 1])
        random_imputed = None  # ONCE: the random map's imputations, drawn in the first condition
        for hidden in (None, torch.zeros(1)):
            wrapper = ImageOnlyInput(model, ids, mask, hidden)
            with torch.no_grad():
                target = int(wrapper(images).argmax(1))
            targets = [ClassifierOutputSoftmaxTarget(target)]
            made = {}
            for label, make in ((MAPS_BEFORE, maps_before), (MAPS, branch_maps)):
                started = time.perf_counter()
                made[label] = make(model, wrapper, images, transform.blank_input(), target, targets[0])
                seconds[label] += 0.0 if warm_up else time.perf_counter() - started
            maps = list(made[MAPS].values())
            pairs = zip(made[MAPS_BEFORE].values(), maps, strict=True)
            map_differences.append(float(max(np.abs(a - b).max() for a, b in pairs)))
            maps.append(np.random.default_rng(0).random(images.shape[-2:], dtype=np.float32))
            batch, cams = images.expand(len(maps), -1, -1, -1), np.stack(maps)
            scores = {}
            for label, road, wrap in (
                (REFERENCE, ROADCombined(percentiles=list(PERCENTILES)), WholeModel),
                (BEFORE, per_map_and_percentile, ImageOnlyInput),
                (OURS, road_combined, ImageOnlyInput),
            ):
                torch.manual_seed(0)  # the same imputation noise
                started = time.perf_counter()
                scores[label] = road(batch, cams, targets * len(maps), wrap(model, ids, mask, hidden))
                seconds[label] += 0.0 if warm_up else time.perf_counter() - started
            torch.manual_seed(0)
            started = time.perf_counter()
            if random_imputed is None:
                random_imputed = road_imputations(images, cams[-1:])
            imputed = torch.cat([road_imputations(batch[:-1], cams[:-1]), random_imputed], dim=2)
            road_from_imputations(imputed, targets * len(maps), ImageOnlyInput(model, ids, mask, hidden))
            seconds[ONCE] += 0.0 if warm_up else time.perf_counter() - started
            differences.append(float(np.abs(scores[REFERENCE] - scores[OURS]).max()))
    n = len(chosen) - 1
    print(
        f"\n{name}: {n} test products, both title conditions, {len(maps)} maps each, {torch.get_num_threads()} threads"
    )
    print("| step | s per product | vs the first row |\n|---|---|---|")
    for label, total in seconds.items():
        first = seconds[MAPS_BEFORE] if label in (MAPS_BEFORE, MAPS) else seconds[REFERENCE]
        print(f"| {label} | {total / n:.2f} | {first / total:.2f}x |")
    print(f"maps: {seconds[MAPS_BEFORE] / seconds[MAPS]:.2f}x faster, largest difference {max(map_differences):.1e}")
    ratio = seconds[REFERENCE] / seconds[OURS]
    print(
        f"speed-up {ratio:.2f}x ({seconds[BEFORE] / seconds[OURS]:.2f}x over the per-map way); "
        f"largest score difference from the library {max(differences):.1e}"
    )
    print(f"the random map imputed once: {seconds[OURS] / seconds[ONCE]:.2f}x over road_combined per condition")
    result = {
        "catalog": name,
        "config": cfg.name,
        "model": args.model,
        "products": n,
        "threads": torch.get_num_threads(),
        "seconds_per_product": {k: v / n for k, v in seconds.items()},
        "speed_up": ratio,
        "speed_up_over_per_map_and_percentile": seconds[BEFORE] / seconds[OURS],
        "random_imputed_once_speed_up": seconds[OURS] / seconds[ONCE],
        "largest_score_difference": max(differences),
        "maps_speed_up": seconds[MAPS_BEFORE] / seconds[MAPS],
        "largest_map_difference": max(map_differences),
    }
    write_result(result, args.out, f"road_cost_{name}.json")


if __name__ == "__main__":
    main()
