"""Watermarks: placement, opacity, scale, alpha, animations, and the check of an upload."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from resizer.errors import (CorruptImage, ImageTooLarge, InvalidParameter, MissingImage, PayloadTooLarge,
                            UnsupportedImageFormat)
from resizer.imaging import ImageLimits, WatermarkLimits, inspect_watermark, process
from resizer.options import Limits, parse_options

BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def _save(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


MARK = _save(Image.new("RGBA", (20, 10), WHITE + (255,)))  # a solid white 20x10 mark


def _run(data: bytes, mark: dict, marks: dict[str, bytes] | None = None, **options) -> Image.Image:
    spec = parse_options({"width": 200, "height": 100, "fit": "fill", "format": "png", "watermark": mark, **options},
                         Limits())
    (out,) = process(data, spec, ImageLimits(), watermarks={"logo": MARK} if marks is None else marks).outputs
    return Image.open(io.BytesIO(out.data))


def _white_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels that are not black (where the white mark landed)."""
    return image.convert("L").point(lambda v: 255 if v > 40 else 0).getbbox()


BLACK_PNG = _save(Image.new("RGB", (200, 100), BLACK))


@pytest.mark.parametrize("gravity, box", [
    ("south_east", (175, 85, 195, 95)),
    ("north_west", (5, 5, 25, 15)),
    ("north", (90, 5, 110, 15)),
    ("west", (5, 45, 25, 55)),
    ("center", (90, 45, 110, 55)),
    ("south_west", (5, 85, 25, 95)),
])
def test_the_mark_sits_by_gravity_margin_pixels_in(gravity, box):
    result = _run(BLACK_PNG, {"image": "logo", "gravity": gravity, "margin": 5, "opacity": 1})
    assert result.size == (200, 100)
    assert _white_box(result) == box
    x0, y0, x1, y1 = box
    assert result.convert("RGB").getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == WHITE


def test_the_defaults_are_south_east_half_opacity_own_size_no_margin():
    result = _run(BLACK_PNG, {"image": "logo"}).convert("RGB")
    assert _white_box(result) == (180, 90, 200, 100)
    assert all(abs(v - 128) <= 1 for v in result.getpixel((190, 95)))  # white at 0.5 over black


@pytest.mark.parametrize("opacity", [0.0, 0.25, 0.75, 1.0])
def test_opacity_blends_the_mark(opacity):
    result = _run(BLACK_PNG, {"image": "logo", "opacity": opacity, "gravity": "center"}).convert("RGB")
    assert all(abs(v - 255 * opacity) <= 1.5 for v in result.getpixel((100, 50)))


@pytest.mark.parametrize("scale, size", [(0.25, (50, 25)), (0.5, (100, 50)), (0.05, (10, 5))])
def test_scale_sets_the_width_as_a_fraction_of_the_outputs_keeping_the_aspect(scale, size):
    box = _white_box(_run(BLACK_PNG, {"image": "logo", "scale": scale, "opacity": 1, "gravity": "north_west"}))
    assert box is not None and (box[2] - box[0], box[3] - box[1]) == size


def test_a_mark_never_outgrows_the_output():
    box = _white_box(_run(BLACK_PNG, {"image": "logo", "scale": 1.0, "margin": 10, "opacity": 1}))
    assert box == (30, 10, 190, 90)  # 200x100 asked; 180x80 of room inside the margins -> 160x80, south east


def test_the_marks_alpha_is_honoured():
    mark = Image.new("RGBA", (20, 10), WHITE + (255,))
    mark.paste((0, 0, 0, 0), (0, 0, 10, 10))  # left half transparent
    result = _run(BLACK_PNG, {"image": "logo", "opacity": 1, "gravity": "north_west"}, {"logo": _save(mark)})
    assert _white_box(result) == (10, 0, 20, 10)


def test_a_transparent_output_stays_transparent_around_the_mark():
    clear = _save(Image.new("RGBA", (200, 100), (0, 0, 0, 0)))
    result = _run(clear, {"image": "logo", "opacity": 1})
    assert result.mode == "RGBA"
    assert result.getpixel((10, 10))[3] == 0 and result.getpixel((190, 95)) == WHITE + (255,)


def test_jpeg_outputs_are_marked_then_flattened():
    result = _run(BLACK_PNG, {"image": "logo", "opacity": 1}, format="jpeg").convert("RGB")
    assert min(result.getpixel((190, 95))) > 240 and max(result.getpixel((100, 50))) < 15


def test_variants_carry_their_own_marks_sized_to_them():
    spec = parse_options({"format": "png", "fit": "fill", "watermark": {"image": "logo", "scale": 0.5, "opacity": 1},
                          "variants": [{"name": "big", "width": 200, "height": 100},
                                       {"name": "small", "width": 40, "height": 20},
                                       {"name": "bare", "width": 40, "height": 20,
                                        "watermark": {"image": "logo", "opacity": 0}}]}, Limits())
    outs = {o.name: Image.open(io.BytesIO(o.data)) for o in process(BLACK_PNG, spec, ImageLimits(),
                                                                     watermarks={"logo": MARK}).outputs}
    assert _white_box(outs["big"]) == (100, 50, 200, 100)
    assert _white_box(outs["small"]) == (20, 10, 40, 20)
    assert _white_box(outs["bare"]) is None


def test_every_frame_of_an_animation_is_marked():
    frames = [Image.new("RGB", (200, 100), c) for c in ((0, 0, 90), (90, 0, 0), (0, 60, 0))]
    data = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    spec = parse_options({"width": 200, "format": "webp", "quality": 100,
                          "watermark": {"image": "logo", "opacity": 1}}, Limits())
    (out,) = process(data, spec, ImageLimits(), watermarks={"logo": MARK}).outputs
    result = Image.open(io.BytesIO(out.data))
    assert result.n_frames == 3
    for index in range(3):
        result.seek(index)
        frame = result.convert("RGB")
        assert min(frame.getpixel((190, 95))) > 200 and min(frame.getpixel((150, 50))) < 100, index


def test_a_named_mark_that_is_not_given_is_an_invalid_parameter():
    with pytest.raises(InvalidParameter, match="'gone'"):
        _run(BLACK_PNG, {"image": "gone"})


# -- checking an upload --------------------------------------------------------------------------------
LIMITS = WatermarkLimits(max_bytes=50_000, max_pixels=40_000)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_png_or_webp_mark_is_accepted_with_its_size(fmt):
    assert inspect_watermark(_save(Image.new("RGBA", (64, 32), (9, 9, 9, 100)), fmt), LIMITS) == (64, 32)


def _animated_png() -> bytes:
    frames = [Image.new("RGBA", (20, 20), c) for c in ((255, 0, 0, 255), (0, 255, 0, 255))]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("data, error", [
    (b"", MissingImage),
    (_save(Image.new("RGB", (20, 20)), "JPEG"), UnsupportedImageFormat),
    (_save(Image.new("RGB", (20, 20)), "GIF"), UnsupportedImageFormat),
    (b"not an image at all", UnsupportedImageFormat),
    (_animated_png(), UnsupportedImageFormat),
    (_save(Image.new("RGBA", (300, 200)), "PNG"), ImageTooLarge),
    (_save(Image.effect_noise((180, 180), 100).convert("RGB"), "PNG", compress_level=0), PayloadTooLarge),
    (_save(Image.effect_noise((100, 100), 60).convert("RGB"), "PNG")[:-600], CorruptImage),
], ids=["empty", "jpeg", "gif", "garbage", "animated", "pixels", "bytes", "truncated"])
def test_a_bad_mark_is_refused_with_the_usual_errors(data, error):
    with pytest.raises(error):
        inspect_watermark(data, LIMITS)
