"""What the upload was (source) and its placeholder (BlurHash 4x3, average colour)."""

from __future__ import annotations

import io

import blurhash
import pytest
from PIL import Image

from resizer.imaging import ImageLimits, Placeholder, Source, process
from resizer.options import Limits, parse_options


def _run(data: bytes, **options):
    return process(data, parse_options({"width": 32, **options}, Limits()), ImageLimits())


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("WEBP", "RGB"), ("PNG", "RGBA"), ("GIF", "P"),
                                       ("TIFF", "RGB"), ("BMP", "RGB")])
def test_the_colour_of_a_solid_image_is_exact(fmt, mode):
    colour = (12, 200, 99)
    image = Image.new("RGB", (300, 170), colour)
    if mode == "P":
        image = image.quantize(4)
    elif mode == "RGBA":
        image = image.convert("RGBA")
    data = _save(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert _run(data).placeholder.color == "#0cc863"


def test_the_blurhash_decodes_back_to_the_pictures_colours():
    picture = Image.new("RGB", (400, 300), (220, 30, 30))  # red left half, blue right half
    picture.paste((30, 40, 220), (200, 0, 400, 300))
    result = _run(_save(picture, "PNG"))
    hash_ = result.placeholder.blurhash
    assert blurhash.components(hash_) == (4, 3)
    decoded = blurhash.decode(hash_, 40, 30)  # rows of [r, g, b]
    left, right = decoded[15][3], decoded[15][36]
    assert left[0] > 150 and left[2] < 100, left
    assert right[2] > 150 and right[0] < 100, right
    mean = [sum(row[x][c] for row in decoded for x in range(40)) / 1200 for c in range(3)]
    assert all(abs(m - e) < 25 for m, e in zip(mean, (125, 35, 125))), mean
    colour = bytes.fromhex(result.placeholder.color[1:])
    # (220 + 30) / 2, (30 + 40) / 2, (30 + 220) / 2, within the rounding of the small copy it comes from
    assert all(abs(c - e) <= 1 for c, e in zip(colour, (125, 35, 125))), result.placeholder.color


def test_the_source_is_described_as_displayed():
    stored = Image.new("RGB", (400, 300), (90, 90, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 300 wide, 400 high
    data = _save(stored, "JPEG", exif=exif.tobytes())
    result = _run(data)
    assert result.source == Source(width=300, height=400, format="jpeg", bytes=len(data))


@pytest.mark.parametrize("fmt, name", [("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tiff"),
                                       ("BMP", "bmp"), ("AVIF", "avif"), ("HEIF", "heic")])
def test_the_source_format_has_the_apis_name(fmt, name):
    import pillow_heif  # noqa: F401  (registers the HEIF writer)

    data = _save(Image.new("RGB", (20, 10), (1, 2, 3)), fmt)
    assert _run(data).source == Source(20, 10, name, len(data))


def test_a_transparent_image_is_painted_on_white():
    data = _save(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG")
    assert _run(data, format="png").placeholder.color == "#ffffff"


def test_an_animation_is_described_by_its_first_frame():
    frames = [Image.new("RGB", (60, 40), c) for c in ((250, 0, 0), (0, 0, 250))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    result = _run(data, format="auto")
    assert result.placeholder.color == "#fa0000" and result.source == Source(60, 40, "gif", len(data))
    assert isinstance(result.placeholder, Placeholder)


def test_a_result_still_iterates_as_the_list_of_outputs():
    """The 1.0 interface (tasks.py iterates process()'s return value) keeps working."""
    result = _run(_save(Image.new("RGB", (40, 40)), "PNG"), variants=[{"name": "a"}, {"name": "b", "width": 8}])
    assert [o.name for o in result] == ["a", "b"] and len(result) == 2


def test_our_blurhash_is_the_librarys():
    """The encoder sums rows, then columns, with the library's cosines and conversion tables (3.6 -> 0.2 ms a job);
    every string must still be the one the ``blurhash`` library makes, for any size and component count."""
    import random

    from resizer.imaging.placeholder import encode_blurhash

    rnd = random.Random(14)
    for _ in range(600):
        width, height = rnd.randint(1, 14), rnd.randint(1, 14)
        rows = [[tuple(rnd.randint(0, 255) for _ in range(3)) for _ in range(width)] for _ in range(height)]
        x, y = rnd.randint(1, 9), rnd.randint(1, 9)
        assert encode_blurhash(rows, x, y) == blurhash.encode(rows, x, y), (width, height, x, y)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_thumbnails_placeholder_is_the_librarys_hash_and_imagestats_mean(mode):
    """placeholder() reads the pixels as planes of bytes and the mean from the histogram: the result must be what
    the library's encoder makes of the same small copy's pixels, and ImageStat's mean, rounded."""
    import random

    from PIL import ImageStat

    from resizer.imaging.placeholder import _BLURHASH_SIDE, _on_paper, placeholder

    rnd = random.Random(mode)
    for _ in range(60):
        size = (rnd.randint(1, 64), rnd.randint(1, 64))
        thumb = Image.frombytes(mode, size, bytes(rnd.randrange(256) for _ in range(size[0] * size[1] * len(mode))))
        flat = _on_paper(thumb)
        scale = min(1.0, _BLURHASH_SIDE / max(size))
        tiny = flat.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.Resampling.BOX)
        pixels = list(tiny.get_flattened_data())
        rows = [pixels[y * tiny.width : (y + 1) * tiny.width] for y in range(tiny.height)]
        colour = "#" + "".join(f"{round(v):02x}" for v in ImageStat.Stat(flat).mean)
        assert placeholder(thumb) == Placeholder(blurhash.encode(rows, 4, 3), colour), size
