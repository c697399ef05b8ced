"""The one image transform: derived from the model config, bounded decoding, used by index rebuilds too."""

import numpy as np
import pytest
from PIL import Image

from kickvision.config import ValidateConfig
from kickvision.data.images import IMAGE_FORMATS, ImageTransform, resolve_image_transform
from kickvision.data.validation import probe_image
from kickvision.train.update import rebuild_index


def test_the_transform_follows_the_model_config(tiny_config):
    cfg = tiny_config.model.model_copy(update={"image_size": 24, "image_mean": (0.0, 0.0, 0.0), "image_std": (1, 1, 1)})
    transform = resolve_image_transform(cfg, max_pixels=1234)
    assert (transform.size, transform.max_pixels) == (24, 1234)
    pixels = np.full((1, 24, 24, 3), 255, np.uint8)
    assert float(transform.normalise(pixels).max()) == 1.0  # (1 - 0) / 1
    assert float(resolve_image_transform(tiny_config.model).normalise(pixels).max()) == 1.0  # (1 - 0.5) / 0.5
    assert float(resolve_image_transform(tiny_config.model).normalise(pixels * 0).min()) == -1.0


def test_a_portrait_is_letterboxed_on_white_without_distortion():
    transform = ImageTransform(size=16)
    portrait = Image.new("RGB", (8, 16), (0, 0, 0))
    pixels = transform.letterbox(portrait)
    assert pixels.shape == (16, 16, 3)
    assert (pixels[:, :4] == 255).all() and (pixels[:, -4:] == 255).all() and (pixels[:, 4:12] == 0).all()
    batch, present = transform.pixels([portrait, None])
    assert batch.shape == (2, 16, 16, 3) and present.tolist() == [1.0, 0.0] and (batch[1] == 255).all()


def test_a_portrait_input_takes_portrait_photos_whole_and_pads_landscapes_top_and_bottom():
    transform = ImageTransform(size=(16, 12))  # height x width, as catalog photos (60x80 portraits)
    assert transform.letterbox(Image.new("RGB", (12, 16), (0, 0, 0))).max() == 0  # fills the input, no padding
    pixels = transform.letterbox(Image.new("RGB", (12, 6), (0, 0, 0)))
    assert pixels.shape == (16, 12, 3) and transform.blank().shape == (16, 12, 3)
    assert (pixels[:5] == 255).all() and (pixels[-5:] == 255).all() and (pixels[5:11] == 0).all()
    assert transform.normalise(pixels[None]).shape == (1, 3, 16, 12)


def test_an_image_over_the_pixel_bound_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(path)
    assert ImageTransform(size=8, max_pixels=10_000).load(path).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="over the 9,999-pixel limit"):
        ImageTransform(size=8, max_pixels=9_999).load(path)
    pixels, readable = ImageTransform(size=8, max_pixels=9_999).load_or_blank([path, tmp_path / "gone.png"])
    assert readable.tolist() == [False, False] and (pixels == 255).all()


def test_an_index_rebuild_reads_old_photos_under_the_same_pixel_bound(shared_trained, demo_data):
    items = shared_trained.index.items
    old = int((~items["product_id"].isin(demo_data.rows["product_id"])).sum())  # the drop replaces the rest
    generous = shared_trained.image_transform()
    _, counts = rebuild_index(shared_trained, shared_trained.index, demo_data, generous)
    assert counts["index_old_with_image"] == old > 0 and counts["index_old_title_only"] == 0
    strict = shared_trained.image_transform(max_pixels=10)  # every old photo is over this bound
    index, counts = rebuild_index(shared_trained, shared_trained.index, demo_data, strict)
    assert counts["index_old_with_image"] == 0 and counts["index_old_title_only"] == old
    assert len(index) == old + len(demo_data.rows)


def test_transparent_photos_sit_on_white_like_the_padding(tmp_path):
    photo = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black...
    photo.paste((200, 30, 30, 255), (2, 2, 6, 6))  # ...around an opaque red square
    photo.save(tmp_path / "cutout.png")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "cutout.gif", transparency=palette.getpixel((0, 0)))
    for name in ("cutout.png", "cutout.gif"):
        pixels = ImageTransform(size=8).load(tmp_path / name)
        assert (pixels[0, 0] == 255).all(), name  # white, not black
        assert pixels[4, 4, 0] > 150 and pixels[4, 4, 1] < 80, name


def test_16_bit_greyscale_photos_keep_their_tones(tmp_path):
    grey = np.full((8, 8), 32768, np.uint16)  # mid-grey in 16 bits
    grey[:4] = 8000
    Image.fromarray(grey).save(tmp_path / "deep.png")
    pixels = ImageTransform(size=8).load(tmp_path / "deep.png")
    assert abs(int(pixels[6, 0, 0]) - 128) <= 2 and abs(int(pixels[1, 0, 0]) - 31) <= 2


def test_phone_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    photo = Image.new("RGB", (16, 8), (255, 255, 255))
    photo.paste((0, 0, 0), (0, 0, 8, 8))  # the left half dark, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = ImageTransform(size=(16, 8)).load(tmp_path / "phone.jpg")  # portrait once turned
    assert upright[:6].mean() < 60 and upright[10:].mean() > 200  # the dark half is now on top


def test_one_colour_marked_transparent_by_a_trns_chunk_sits_on_white(tmp_path):
    photo = Image.new("RGB", (8, 8), (0, 0, 0))  # black background...
    photo.paste((200, 30, 30), (2, 2, 6, 6))  # ...around a red square; black is declared transparent
    photo.save(tmp_path / "keyed.png", transparency=(0, 0, 0))
    grey = Image.new("L", (8, 8), 0)
    grey.paste(120, (2, 2, 6, 6))
    grey.save(tmp_path / "keyed_grey.png", transparency=0)
    for name in ("keyed.png", "keyed_grey.png"):
        pixels = ImageTransform(size=8).load(tmp_path / name)
        assert (pixels[0, 0] == 255).all(), name
        assert pixels[4, 4].max() < 210, name


def test_floating_point_greyscale_in_zero_to_one_keeps_its_tones(tmp_path):
    grey = np.full((8, 8), 0.5, np.float32)
    grey[:4] = 0.125
    Image.fromarray(grey, mode="F").save(tmp_path / "float.tiff")
    pixels = ImageTransform(size=8).load(tmp_path / "float.tiff")
    assert abs(int(pixels[6, 0, 0]) - 128) <= 2 and abs(int(pixels[1, 0, 0]) - 32) <= 2


def test_formats_outside_the_photo_allow_list_are_refused_unread(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "photo.ppm")  # Pillow reads it; kickvision does not
    Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / "photo.ico")
    for name in ("photo.ppm", "photo.ico"):
        assert Image.open(tmp_path / name).size  # a format Pillow knows
        with pytest.raises(OSError, match="cannot identify"):
            ImageTransform(size=8).load(tmp_path / name)
    for fmt in IMAGE_FORMATS:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / f"ok.{fmt.lower()}", format=fmt)
        assert ImageTransform(size=8).load(tmp_path / f"ok.{fmt.lower()}")[4, 4, 2] in range(25, 36), fmt


def test_a_catalog_photo_in_a_refused_format_is_quarantined_with_the_accepted_formats(tmp_path):
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "photo.ppm")
    status, sha1, _, _ = probe_image(tmp_path, "photo.ppm", ValidateConfig())
    assert sha1 is None and status == "image does not decode as JPEG/PNG/WEBP/GIF/BMP/TIFF: photo.ppm"


def test_a_corrupted_image_of_any_allowed_format_is_an_oserror_or_valueerror_never_another_exception():
    """Random byte flips and truncations (a broken PNG chunk made PIL raise SyntaxError, which
    reached the review desk as a 500)."""
    import io
    import random

    from kickvision.data.images import IMAGE_FORMATS, open_image_bounded

    rng = random.Random(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    for fmt in IMAGE_FORMATS:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = buffer.getvalue()
        for _ in range(300):
            broken = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            if rng.random() < 0.2:
                broken = broken[: rng.randrange(len(broken))]
            try:
                open_image_bounded(io.BytesIO(bytes(broken)))
            except (OSError, ValueError):
                pass
