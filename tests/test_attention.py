"""gravity=smart: 'cover' keeps the interesting part of generated pictures, and the centre of flat ones."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw, ImageStat

from resizer.imaging import ImageLimits, process
from resizer.imaging.attention import best_window, interest
from resizer.options import Limits, parse_options

GREY = (128, 128, 128)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _subject(kind: str) -> Image.Image:
    """A 60x60 subject: detail (noise and stripes), saturated colour, or a flat skin-toned face."""
    if kind == "detail":
        subject = Image.effect_noise((60, 60), 90).convert("RGB")
        draw = ImageDraw.Draw(subject)
        for x in range(0, 60, 6):
            draw.line((x, 0, x, 59), fill=(20, 20, 20), width=2)
        return subject
    if kind == "colour":
        return Image.new("RGB", (60, 60), (230, 20, 160))
    face = Image.new("RGB", (60, 60), GREY)
    ImageDraw.Draw(face).ellipse((4, 0, 56, 59), fill=(224, 172, 140))
    return face


# Source size and where the subject sits; a 100x100 cover keeps a 200x200 window of it.
CASES = {"left": ((300, 200), (10, 70)), "right": ((300, 200), (230, 70)), "top": ((200, 300), (70, 10))}


def _cover(data: bytes, gravity: str) -> Image.Image:
    spec = parse_options({"width": 100, "height": 100, "fit": "cover", "gravity": gravity, "format": "png"}, Limits())
    (out,) = process(data, spec, ImageLimits()).outputs
    return Image.open(io.BytesIO(out.data)).convert("RGB")


def _not_grey(image: Image.Image) -> int:
    """How many pixels differ from the background: how much of the subject a picture shows."""
    return sum(1 for p in image.get_flattened_data() if max(abs(c - g) for c, g in zip(p, GREY)) > 12)


@pytest.mark.parametrize("kind", ["detail", "colour", "skin"])
@pytest.mark.parametrize("where", CASES)
def test_smart_cover_keeps_an_off_centre_subject(where, kind):
    size, at = CASES[where]
    picture = Image.new("RGB", size, GREY)
    picture.paste(_subject(kind), at)
    whole = _not_grey(_subject(kind).resize((30, 30), Image.Resampling.BOX))  # the subject at the output's scale
    smart, centred = _not_grey(_cover(_png(picture), "smart")), _not_grey(_cover(_png(picture), "center"))
    assert smart >= 0.9 * whole, f"smart crop kept {smart} of the subject's {whole} pixels"
    assert centred <= 0.5 * whole, "the centred crop keeps the subject too: the case proves nothing"


@pytest.mark.parametrize("picture", [
    Image.new("RGB", (300, 200), (40, 90, 200)),
    Image.linear_gradient("L").resize((300, 200)).convert("RGB"),
    Image.merge("HSV", (Image.linear_gradient("L").rotate(90).resize((300, 200)).point(lambda v: 128 + v // 6),
                        Image.new("L", (300, 200), 200), Image.new("L", (300, 200), 200))).convert("RGB"),
], ids=["solid", "grey-ramp", "cyan-to-blue-ramp"])
def test_smart_cover_of_a_flat_picture_is_the_centre(picture):
    data = _png(picture)
    assert _cover(data, "smart").tobytes() == _cover(data, "center").tobytes()


def test_the_window_search_finds_the_busiest_box_and_prefers_the_centre_on_ties():
    rows = [[0.0] * 12 for _ in range(4)]
    rows[1][9] = 50.0
    assert best_window(rows, (3, 4)) == (8, 0)  # the middle of the windows that hold it: centred on it
    rows[1][9] = 1.0
    assert best_window(rows, (3, 4)) is None  # too little to matter: keep the centre
    assert best_window([[90.0] * 10 for _ in range(4)], (3, 4)) is None  # evenly busy: keep the centre


def test_transparent_parts_hold_no_interest():
    thumb = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    thumb.paste(Image.effect_noise((8, 8), 90).convert("RGBA").crop((0, 0, 8, 8)), (0, 0))
    thumb.putalpha(0)
    assert max(max(row) for row in interest(thumb)) == 0


def test_smart_crop_of_an_animation_moves_every_frame_alike():
    frames = []
    for shade in (60, 160):
        frame = Image.new("RGB", (300, 200), (shade, shade, shade))
        frame.paste(_subject("detail"), (230, 70))
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    spec = parse_options({"width": 100, "height": 100, "fit": "cover", "gravity": "smart", "format": "webp"},
                         Limits())
    (out,) = process(buf.getvalue(), spec, ImageLimits()).outputs
    result = Image.open(io.BytesIO(out.data))
    for index in range(2):
        result.seek(index)
        region = result.convert("RGB").crop((65, 35, 95, 65))  # the subject, with the crop against the right
        assert ImageStat.Stat(region).stddev[0] > 30, f"frame {index}"


@pytest.mark.parametrize("size", [(1, 300), (300, 1), (2, 2), (3, 1000), (1000, 3), (1, 1)])
@pytest.mark.parametrize("box", [(1, 1), (50, 10), (10, 50)])
def test_smart_cover_of_extreme_shapes_has_the_planned_size(size, box):
    picture = Image.effect_noise(size, 80).convert("RGB")
    spec = parse_options({"width": box[0], "height": box[1], "fit": "cover", "gravity": "smart", "enlarge": True,
                          "format": "png"}, Limits())
    (out,) = process(_png(picture), spec, ImageLimits()).outputs
    assert (out.width, out.height) == box == Image.open(io.BytesIO(out.data)).size
