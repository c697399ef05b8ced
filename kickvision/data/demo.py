"""The embedded demo catalog: drawn shoes with generated titles, offline and deterministic.

Built so that neither modality is enough on its own, which is what makes fusion measurable:

- the photo tells the *shape* (laced low shoe, strappy sandal, boot, heel, flat) but not the use:
  Casual vs Sports Shoes and Sandals vs Sports Sandals are drawn from the same shape distribution;
- the title tells the *use* (everyday / sport / party words) but rarely the shape: most titles end
  in a generic noun ("Shoes", "Pair") and the use words are shared across shapes.

`write_demo_catalog(out, bad_rows=True)` also writes one row of each kind validation must catch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from kickvision.data.catalog import write_catalog

CANVAS = 128  # drawn at 2x and downsampled, for anti-aliased edges


@dataclass(frozen=True)
class DemoCategory:
    name: str
    shape: str  # which silhouette is drawn
    use_words: dict[str, float]  # use-word family -> probability (rest: no use word)
    nouns: tuple[str, ...]  # category-revealing nouns, used in a minority of titles
    genders: tuple[str, ...] = ("Men", "Women", "Unisex")


USE_WORDS = {
    "casual": ("Everyday", "Canvas", "City", "Classic", "Comfort", "Weekend"),
    "sport": ("Running", "Trail", "Training", "Active", "Grip", "Performance"),
    "party": ("Party", "Evening", "Glam", "Chic"),
}
CATEGORIES = (
    DemoCategory("Casual Shoes", "laced", {"casual": 0.85}, ("Sneakers", "Lace-Ups")),
    DemoCategory("Sports Shoes", "laced", {"sport": 0.85}, ("Trainers", "Runners")),
    DemoCategory("Sandals", "strappy", {"casual": 0.85}, ("Sandals",)),
    DemoCategory("Sports Sandals", "strappy", {"sport": 0.85}, ("Sport Sandals", "Floaters")),
    DemoCategory("Boots", "boot", {"casual": 0.45, "sport": 0.45}, ("Boots",)),
    DemoCategory("Heels", "heel", {"party": 0.5, "casual": 0.4}, ("Heels", "Pumps"), ("Women",)),
    DemoCategory("Flats", "flat", {"party": 0.4, "casual": 0.5}, ("Flats", "Ballerinas"), ("Women", "Girls")),
)
# Categories that appear only in catalog drops (write_demo_drop), never in the base demo catalog.
DROP_CATEGORIES = (
    DemoCategory("Loafers", "loafer", {"casual": 0.6, "party": 0.3}, ("Loafers", "Moccasins"), ("Men", "Women")),
)
BRANDS = ("Stride", "Nordpeak", "Lumo", "Kestrel", "Vanta", "Arco", "Solace", "Tundra", "Pace", "Mira")
COLOURS = {
    "Black": (30, 30, 34),
    "White": (236, 236, 232),
    "Red": (200, 40, 45),
    "Blue": (40, 80, 190),
    "Brown": (120, 72, 40),
    "Grey": (128, 128, 130),
    "Green": (50, 140, 70),
    "Pink": (230, 120, 170),
    "Tan": (200, 160, 110),
    "Navy": (25, 35, 90),
}
GENERIC_NOUNS = ("Shoes", "Footwear", "Pair", "Shoes", "Pair")
NOUN_PROBABILITY = 0.2  # like real catalogs, a minority of titles name the category outright

# One row of each kind the validate step must quarantine: kind -> reason fragment it must report.
BAD_ROW_KINDS = {
    "missing_file": "image file not found",
    "corrupt_bytes": "image does not decode",
    "empty_file": "image file is empty",
    "path_traversal": "escapes the drop folder",
    "duplicate_id": "appears",
    "empty_title": "title",
    "missing_category": "category",
}


def draw_shoe(shape: str, colour: tuple[int, int, int], rng: random.Random, size: int) -> Image.Image:
    """Draw one shoe of `shape` on a random background, in a random pose, with noise."""
    bg_top = tuple(rng.randint(150, 255) for _ in range(3))
    bg_bottom = tuple(max(0, c - rng.randint(0, 60)) for c in bg_top)
    ramp = np.linspace(0, 1, CANVAS)[:, None, None]
    background = (np.array(bg_top) * (1 - ramp) + np.array(bg_bottom) * ramp).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(background, (CANVAS, CANVAS, 3)).copy())
    draw = ImageDraw.Draw(img)

    sole_colour = rng.choice([(245, 245, 240), (25, 25, 25), (170, 120, 70), colour])
    accent = tuple(255 - c for c in colour)
    x0, x1 = 18 + rng.randint(-4, 4), 110 + rng.randint(-4, 4)  # heel end, toe end
    ground = 96 + rng.randint(-4, 4)

    if shape == "heel":
        heel_h = rng.randint(22, 34)
        sole_t = rng.randint(2, 4)
        # the sole slopes from the raised heel down to the toe
        draw.polygon(
            [(x0, ground - heel_h), (x1, ground - sole_t), (x1, ground), (x0 + 14, ground - heel_h + sole_t)],
            fill=sole_colour,
        )
        draw.polygon(
            [(x0, ground - heel_h), (x0 + 6, ground - heel_h), (x0 + 5, ground), (x0 + 2, ground)], fill=sole_colour
        )
        top = ground - heel_h - rng.randint(14, 22)
        draw.polygon(
            [(x0, ground - heel_h), (x0 + 2, top), (x0 + 22, top + 8), (x1 - 12, ground - 18), (x1, ground - sole_t)],
            fill=colour,
        )
    else:
        sole_t = {
            "loafer": rng.randint(3, 6),
            "laced": rng.randint(5, 9),
            "boot": rng.randint(6, 10),
            "flat": rng.randint(2, 4),
            "strappy": rng.randint(4, 7),
        }[shape]
        draw.rounded_rectangle([x0, ground - sole_t, x1, ground], radius=3, fill=sole_colour)
        base = ground - sole_t
        if shape == "strappy":
            for i in range(rng.randint(2, 4)):
                sx = x0 + 22 + i * rng.randint(16, 22)
                draw.arc([sx - 14, base - 26, sx + 14, base + 20], 180, 360, fill=colour, width=rng.randint(4, 6))
            draw.line([(x0 + 6, base), (x0 + 10, base - 30), (x0 + 26, base - 30)], fill=colour, width=5)
        else:
            body_h = {
                "laced": rng.randint(24, 32),
                "boot": rng.randint(24, 30),
                "flat": rng.randint(12, 17),
                "loafer": rng.randint(18, 23),
            }[shape]
            toe = [(x1, base), (x1 - 6, base - body_h * 0.6), (x1 - 26, base - body_h)]
            if shape == "boot":
                shaft = base - body_h - rng.randint(30, 44)
                back = [(x0, base), (x0 - 2, shaft), (x0 + 34, shaft), (x0 + 38, base - body_h)]
            else:
                back = [(x0, base), (x0, base - body_h), (x0 + 30, base - body_h + (6 if shape == "flat" else 3))]
            draw.polygon(back + toe[::-1], fill=colour)
            if shape in ("laced", "boot") and (shape == "laced" or rng.random() < 0.5):
                top = base - body_h
                for i in range(rng.randint(3, 5)):
                    lx = x0 + 36 + i * 8
                    draw.line([(lx, top + 2 + i * 2), (lx + 8, top + 10 + i * 2)], fill=accent, width=3)
            if shape == "loafer":  # the penny strap across the vamp, and a low heel block
                top = base - body_h
                draw.line([(x1 - 48, top + 3), (x1 - 30, top + 9)], fill=accent, width=4)
                draw.rectangle([x0, base - 3, x0 + 14, base], fill=sole_colour)
            if shape == "flat" and rng.random() < 0.5:
                draw.ellipse([x1 - 36, base - body_h, x1 - 28, base - body_h + 6], fill=accent)  # a bow

    img = img.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, fillcolor=bg_top)
    scale = rng.uniform(0.8, 1.1)
    crop = CANVAS / scale
    cx, cy = CANVAS / 2 + rng.uniform(-8, 8), CANVAS / 2 + rng.uniform(-8, 8)
    img = img.transform(
        (CANVAS, CANVAS),
        Image.Transform.EXTENT,
        (cx - crop / 2, cy - crop / 2, cx + crop / 2, cy + crop / 2),
        fill=1,
        fillcolor=bg_top,
    )
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8))).resize((size, size), Image.Resampling.LANCZOS)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(3, 10), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def make_title(category: DemoCategory, colour: str, rng: random.Random) -> str:
    """Brand, gender, colour, a use word shared across shapes, and usually a generic noun."""
    words = [rng.choice(BRANDS), rng.choice(category.genders), colour]
    roll, acc = rng.random(), 0.0
    for family, probability in category.use_words.items():
        acc += probability
        if roll < acc:
            words.append(rng.choice(USE_WORDS[family]))
            break
    noun = rng.choice(category.nouns) if rng.random() < NOUN_PROBABILITY else rng.choice(GENERIC_NOUNS)
    return " ".join(words + [noun])


def demo_rows(
    n_per_class: int | dict[str, int] = 120,
    seed: int = 7,
    image_size: int = 64,
    categories: tuple[DemoCategory, ...] = CATEGORIES,
    id_prefix: str = "D",
) -> list[tuple[dict, Image.Image]]:
    """Generate (row, image) pairs; the same arguments always give the same catalog."""
    rng = random.Random(seed)
    pairs = []
    for c_index, category in enumerate(categories):
        count = n_per_class.get(category.name, 0) if isinstance(n_per_class, dict) else n_per_class
        for i in range(count):
            colour = rng.choice(list(COLOURS))
            image = draw_shoe(category.shape, COLOURS[colour], rng, image_size)
            product_id = f"{id_prefix}{c_index}{i:05d}"
            row = {
                "product_id": product_id,
                "image": f"images/{product_id}.png",
                "title": make_title(category, colour, rng),
                "category": category.name,
                "base_colour": colour,
            }
            pairs.append((row, image))
    rng.shuffle(pairs)
    return pairs


def write_demo_catalog(
    out_dir: str | Path,
    n_per_class: int = 120,
    seed: int = 7,
    image_size: int = 64,
    bad_rows: bool = False,
) -> Path:
    """Write the demo catalog as a generic drop (catalog.csv + images/); returns the folder."""
    out = Path(out_dir)
    rows = _write_products(out, demo_rows(n_per_class, seed, image_size))
    if bad_rows:
        rows += _write_bad_rows(out, rows[0])
    write_catalog(pd.DataFrame(rows), out)
    return out


def write_demo_drop(
    out_dir: str | Path,
    n_per_class: int = 30,
    new_per_class: int = 90,
    seed: int = 11,
    image_size: int = 64,
    new_categories: bool = True,
) -> Path:
    """A catalog drop for `kickvision update`: new products of the demo categories and, with
    `new_categories`, a category the base catalog never had (Loafers). Ids never collide with the
    base catalog's or another seed's drop."""
    categories = CATEGORIES + (DROP_CATEGORIES if new_categories else ())
    counts = {c.name: n_per_class for c in CATEGORIES} | {c.name: new_per_class for c in DROP_CATEGORIES}
    out = Path(out_dir)
    write_catalog(pd.DataFrame(_write_products(out, demo_rows(counts, seed, image_size, categories, f"U{seed}-"))), out)
    return out


def _write_products(out: Path, pairs: list[tuple[dict, Image.Image]]) -> list[dict]:
    """Save each product's photo under out/images/; returns the catalog rows."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    for row, image in pairs:
        image.save(out / row["image"], optimize=True)
    return [row for row, _ in pairs]


def _write_bad_rows(out: Path, good: dict) -> list[dict]:
    """One row per BAD_ROW_KINDS entry, each broken in exactly one way."""

    def row(kind: str, **changes: str | None) -> dict:
        return {**good, "product_id": f"BAD-{kind}", "image": f"images/bad-{kind}.png", **changes}

    (out / "images" / "bad-corrupt_bytes.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (out / "images" / "bad-empty_file.png").write_bytes(b"")
    (out.parent / "outside.png").write_bytes((out / good["image"]).read_bytes())
    for kind in ("duplicate_id", "empty_title", "missing_category"):
        (out / "images" / f"bad-{kind}.png").write_bytes((out / good["image"]).read_bytes())
    return [
        row("missing_file"),
        row("corrupt_bytes"),
        row("empty_file"),
        row("path_traversal", image="../outside.png"),
        row("duplicate_id", product_id=good["product_id"]),
        row("empty_title", title=""),
        row("missing_category", category=""),
    ]
