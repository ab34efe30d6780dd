"""Shrink on load: let the JPEG decoder scale down by 1/8, 1/4, 3/8 or 1/2 (DCT scaling) while decoding.

1/8, 1/4 and 1/2 come from Pillow's public ``draft()``.  3/8 (what makes
12 MP -> 1024 px cheap) reaches into Pillow internals, so it is used only after
a check, run once per process, that it really decodes a known JPEG at 3/8 with
the right pixels; otherwise ``draft()`` is used, and a Pillow upgrade that
changes those internals costs speed, never correctness.
"""

from __future__ import annotations

import functools
import io
import logging
import math

from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageStat, features

log = logging.getLogger(__name__)

_LIBJPEG_TURBO = bool(features.check_feature("libjpeg_turbo"))


def shrink_on_load(image: Image.Image, scale: float) -> Image.Image:
    """Set up the JPEG decoder to scale by the smallest factor that still decodes what the outputs need.

    Must run before anything loads pixels.  ``scale`` is the largest factor any
    output needs on either axis, so it holds in the stored orientation too.
    """
    if image.format != "JPEG" or scale >= 0.5:
        return image
    width, height = image.size
    need = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    eighths = next(n for n in (1, 2, 3, 4) if _scaled(width, n) >= need[0] and _scaled(height, n) >= need[1])
    if eighths == 3 and three_eighths_works() and _decode_at_three_eighths(image):
        return image
    # draft() keeps the decoded size at least `need`, choosing among 1/2, 1/4 and 1/8.
    image.draft(None, need)
    return image


@functools.cache
def three_eighths_works() -> bool:
    """Whether the 3/8 decode gives the right size and pixels with this Pillow and libjpeg (checked once).

    Call it at start-up to pay the check (about a millisecond) before the first job.
    """
    reference = _check_image()
    buf = io.BytesIO()
    reference.save(buf, "JPEG", quality=95)
    try:
        image = Image.open(buf)
        if not _decode_at_three_eighths(image):
            ok = False
        else:
            image.load()
            expected = (_scaled(reference.width, 3), _scaled(reference.height, 3))
            ok = image.size == expected and _mean_error(image, reference.resize(expected, Image.Resampling.BOX)) < 4
    except Exception as exc:  # anything at all means "do not rely on it"
        log.warning("the 3/8 JPEG decode check raised %s: %s", type(exc).__name__, exc)
        ok = False
    if not ok:
        log.warning("the 3/8 JPEG decode does not work with this Pillow/libjpeg; falling back to draft() (slower)")
    return ok


def _scaled(side: int, eighths: int) -> int:
    """libjpeg's output size for a DCT scale of eighths/8 (it rounds up)."""
    return -(-side * eighths // 8)


def _decode_at_three_eighths(image: Image.Image) -> bool:
    """Have libjpeg-turbo decode at 3/8, which Pillow's draft() does not offer.

    Pillow passes its scale to libjpeg as 1/denominator, and libjpeg-turbo
    rounds 1/3 up to the nearest factor it implements, 3/8; we size the image
    to match.  Returns False (nothing changed) where that cannot be relied on.
    """
    if not _LIBJPEG_TURBO or len(image.tile) != 1 or image.decoderconfig:
        return False
    tile = image.tile[0]
    x0, y0, x1, y1 = tile.extents or (0, 0, *image.size)
    if (x0, y0, x1, y1) != (0, 0, *image.size):
        return False
    size = (_scaled(image.width, 3), _scaled(image.height, 3))
    image.tile = [ImageFile._Tile(tile.codec_name, (0, 0, *size), tile.offset, tile.args)]
    image._size = size
    image.decoderconfig = (3, 0)  # (scale denominator, draft flag): what draft() sets
    return True


def _check_image() -> Image.Image:
    """A smooth picture with a few large shapes: DCT scaling and a box filter agree closely on it.

    Not a multiple of 8 on either side, so the rounding of the scaled size is checked too.
    """
    image = Image.linear_gradient("L").resize((203, 141)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((16, 16, 80, 64), fill=(220, 40, 40))
    draw.ellipse((110, 50, 190, 130), fill=(30, 60, 200))
    return image


def _mean_error(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3
