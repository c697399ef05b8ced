"""Why a product got its category: a map per image branch (Grad-CAM++ for CNNs, patch occlusion for
ViTs; kickvision/evaluate/cam.py), occlusion on the title.

pytorch-grad-cam's GradCAMPlusPlus runs through the whole fused model via a one-input wrapper
that holds the title fixed, so each map explains the fused prediction, not a branch in isolation
(target layers and reshape transforms: cam.py). Each title word's weight is the drop in the target
probability when that word's tokens are hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from kickvision.data.prepare import PreparedData
from kickvision.data.text import tokenize_titles
from kickvision.evaluate.cam import branch_maps, explain_methods
from kickvision.model.bundle import ModelBundle
from kickvision.model.predict import predict_logits


class ImageOnlyInput(nn.Module):
    """The fused model as a function of the photo alone (title tokens fixed): grad-cam's input.

    The title's text-encoder output is computed once, when the wrapper is made, and reused for every
    photo (ROAD alone runs the wrapper dozens of times per product); a model in training mode (dropout
    draws anew each call) reads it on every call."""

    def __init__(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_present: torch.Tensor | None = None,
    ):
        super().__init__()
        self.model, self.input_ids, self.attention_mask, self.text_present = (
            model,
            input_ids,
            attention_mask,
            text_present,
        )
        self.text_features = None
        if model.text_encoder is not None and not model.training:
            with torch.no_grad():
                self.text_features = model.text_encoder(input_ids, attention_mask)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        present = None if self.text_present is None else self.text_present.expand(n)
        title = None if self.text_features is None else self.text_features.expand(n, -1)
        ids, mask = self.input_ids.expand(n, -1), self.attention_mask.expand(n, -1)
        return self.model(images, ids, mask, text_present=present, text_features=title).logits


@dataclass
class Explanation:
    """One product's explanation: probabilities, per-branch CAMs on the input grid, word weights."""

    image: np.ndarray  # uint8 [S, S, 3], the model's view of the photo
    title: str
    probabilities: dict[str, float]
    target: str
    cams: dict[str, np.ndarray]  # branch name -> [S, S] in 0..1
    words: list[tuple[str, float]]  # (word, drop in target probability when the word is hidden)
    cam_methods: dict[str, str] = field(default_factory=dict)  # branch name -> "Grad-CAM++" or "patch occlusion"


def encode_product(bundle: ModelBundle, image: Image.Image | None, title: str | None):
    """(uint8 pixels [S, S, 3], normalised image batch [1, 3, S, S], token ids [1, L], mask [1, L])."""
    transform = bundle.image_transform()
    pixels = transform.blank() if image is None else transform.letterbox(image)
    ids, mask = tokenize_titles(bundle.tokenizer, [title], bundle.max_title_tokens)
    return pixels, transform.normalise(pixels[None]), torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def _probabilities(
    bundle: ModelBundle,
    images: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    text_present: torch.Tensor | None = None,
) -> np.ndarray:
    n = ids.shape[0]
    out = bundle.model(images.expand(n, -1, -1, -1), ids, mask, text_present=text_present)
    return out.logits.float().softmax(1).numpy()


def word_occlusion(bundle: ModelBundle, images: torch.Tensor, title: str, target: int) -> list[tuple[str, float]]:
    """Each word's importance = target probability with the full title minus with that word hidden."""
    encoded = bundle.tokenizer([title], truncation=True, max_length=bundle.max_title_tokens, padding="max_length")
    ids = torch.tensor(encoded["input_ids"])
    mask = torch.tensor(encoded["attention_mask"])
    word_ids = encoded.word_ids(0) if hasattr(encoded, "word_ids") else [None] * ids.shape[1]
    words = sorted({w for w in word_ids if w is not None})
    if not words:
        return []
    variants_ids, variants_mask = [ids[0]], [mask[0]]
    for w in words:
        hidden = torch.tensor([wid == w for wid in word_ids])
        variants_ids.append(ids[0].masked_fill(hidden, bundle.tokenizer.pad_token_id or 0))
        variants_mask.append(mask[0].masked_fill(hidden, 0))
    probs = _probabilities(bundle, images, torch.stack(variants_ids), torch.stack(variants_mask))[:, target]
    spans = [encoded.word_to_chars(0, w) for w in words]
    return [(title[s.start : s.end], float(probs[0] - probs[i + 1])) for i, s in enumerate(spans)]


def explain_product(
    bundle: ModelBundle, image: Image.Image | None, title: str | None, target: str | None = None
) -> Explanation:
    """Explain the prediction (or the class `target`) for one product."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = bundle.model.eval()
    pixels, images, ids, mask = encode_product(bundle, image, title)
    text_present = torch.tensor([1.0 if title else 0.0])
    probs = _probabilities(bundle, images, ids, mask, text_present)[0]
    classes = bundle.classes
    if target is not None and target not in classes:
        raise ValueError(f"unknown class '{target}'; the model knows {', '.join(classes)}")
    target_index = classes.index(target) if target else int(probs.argmax())

    cams, methods = {}, {}
    if image is not None:
        wrapper = ImageOnlyInput(model, ids, mask, text_present)
        blank = bundle.image_transform().blank_input()  # what a patch shows when occluded
        cams = branch_maps(model, wrapper, images, blank, target_index, ClassifierOutputTarget(target_index))
        methods = explain_methods(model)
    words = word_occlusion(bundle, images, title, target_index) if title else []
    return Explanation(
        pixels,
        title or "",
        {c: float(p) for c, p in zip(classes, probs, strict=True)},
        classes[target_index],
        cams,
        words,
        methods,
    )


def plot_explanation(explanation: Explanation, path: str | Path) -> Path:
    """One figure: photo, a CAM overlay per image branch, the highlighted title, top-3 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    panels = 1 + len(explanation.cams)
    fig = plt.figure(figsize=(2.6 * panels + 3.2, 3.6))
    grid = fig.add_gridspec(2, panels + 1, height_ratios=[4, 1])
    rgb = explanation.image.astype(np.float32) / 255
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(explanation.image)
    ax.set_title("photo", fontsize=9)
    ax.axis("off")
    for i, (name, cam) in enumerate(explanation.cams.items(), start=1):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(show_cam_on_image(rgb, cam, use_rgb=True))
        ax.set_title(f"{explanation.cam_methods.get(name, 'CAM')} {name.split('_', 1)[1]}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, panels])
    top = sorted(explanation.probabilities.items(), key=lambda kv: -kv[1])[:3]
    ax.barh([c for c, _ in top][::-1], [p for _, p in top][::-1], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_title(f"predicted / target: {explanation.target}", fontsize=9)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    scale = max((abs(w) for _, w in explanation.words), default=1) or 1
    x = 0.0
    for word, weight in explanation.words:
        colour = plt.cm.RdBu_r(0.5 + 0.35 * weight / scale)  # red: supports the target, blue: against
        text = ax.text(
            x, 0.5, word, fontsize=11, va="center", bbox={"facecolor": colour, "edgecolor": "none", "pad": 2}
        )
        fig.canvas.draw()
        x += text.get_window_extent().transformed(ax.transAxes.inverted()).width + 0.01
    if not explanation.words:
        ax.text(0, 0.5, "(no title)", fontsize=10, va="center", color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def explanation_gallery(bundle: ModelBundle, data: PreparedData, split: str = "test", per_class: int = 1) -> str:
    """A self-contained HTML page: per class, up to `per_class` correct and wrong products of `split`,
    each with its image maps and highlighted title (figures inlined as base64 PNG)."""
    import base64
    import html
    import tempfile

    indices = data.indices(split)
    logits, _ = predict_logits(bundle.model, data, indices)
    predicted = logits.argmax(1)
    labels = data.labels()[indices]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for c, name in enumerate(data.classes):
            cells = []
            for kind, mask in (
                ("correct", (labels == c) & (predicted == c)),
                ("wrong", (labels == c) & (predicted != c)),
            ):
                for j in np.flatnonzero(mask)[:per_class]:
                    row = data.rows.iloc[indices[j]]
                    explanation = explain_product(bundle, Image.fromarray(data.images[indices[j]]), row["title"])
                    png = plot_explanation(explanation, Path(tmp) / "figure.png").read_bytes()
                    caption = f"{kind}: {row['product_id']} labelled {name}, predicted {explanation.target}"
                    cells.append(
                        f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                        f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
                    )
            sections.append(f"<h2>{html.escape(name)}</h2>" + ("".join(cells) or "<p>no test products</p>"))
    style = "body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:.5em}img{max-width:900px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>kickvision explanations</title>"
        f"<style>{style}</style></head><body><h1>Explanations ({split} split): Grad-CAM++ for CNNs, "
        f"patch occlusion for ViTs</h1>" + "".join(sections) + "</body></html>"
    )
