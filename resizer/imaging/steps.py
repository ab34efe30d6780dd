"""The pipeline's steps: small pure functions over Pillow images.

Each step does one thing and returns its input unchanged when it has nothing
to do.  Order matters and lives in ``pipeline.py``.
"""

from __future__ import annotations

import io
import logging
import math

from PIL import Image, ImageCms, ImageFile, features

from .geometry import Plan

log = logging.getLogger(__name__)

_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}
_LIBJPEG_TURBO = bool(features.check_feature("libjpeg_turbo"))
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def shrink_on_load(image: Image.Image, scale: float) -> Image.Image:
    """Let the JPEG decoder scale by 1/8, 1/4, 3/8 or 1/2 (DCT scaling) when the output is that much smaller.

    Picks the smallest of those factors that still decodes at least the
    size the outputs need, so the final resample keeps all the detail.
    Must run before anything loads pixels.  ``scale`` is the largest factor any
    output needs on either axis, so it holds in the stored orientation too.
    """
    if image.format != "JPEG" or scale >= 0.5:
        return image
    width, height = image.size
    need = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    eighths = next(n for n in (1, 2, 3, 4) if _scaled(width, n) >= need[0] and _scaled(height, n) >= need[1])
    if eighths == 3 and _decode_at_three_eighths(image):
        return image
    # draft() keeps the decoded size at least `need`, choosing among 1/2, 1/4 and 1/8.
    image.draft(None, need)
    return image


def _scaled(side: int, eighths: int) -> int:
    """libjpeg's output size for a DCT scale of eighths/8 (it rounds up)."""
    return -(-side * eighths // 8)


def _decode_at_three_eighths(image: Image.Image) -> bool:
    """Have libjpeg-turbo decode at 3/8, which Pillow's draft() does not offer.

    Between 1/4 and 1/2 this is what makes 12 MP -> 1024 px cheap: the decoded
    image is 0.56x the pixels of a 1/2 decode (memory and resample time).  Pillow
    passes its scale to libjpeg as 1/denominator, and libjpeg-turbo rounds 1/3
    up to the nearest factor it implements, 3/8; we size the image to match.
    Returns False (nothing changed) where that cannot be relied on.
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


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """Apply the EXIF orientation, so outputs need (and carry) no orientation tag."""
    for op in _TRANSPOSE.get(orientation, ()):
        image = image.transpose(op)
    return image


def normalize_mode(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to one the resampler handles well: RGB, RGBA, L, LA or CMYK.

    16-bit data is scaled to 8 bits (not clipped); palettes are expanded, keeping transparency.
    """
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return image
    icc = image.info.get("icc_profile")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (or 32-bit int): map 0..65535 onto 0..255.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif mode == "F":
        image = image.point(lambda v: v * 255).convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("RGBa", "La"):
        image = image.convert(mode.upper()[:-1] + "A")
    elif mode == "YCbCr" or mode == "LAB" or mode == "HSV":
        image = image.convert("RGB")
    else:
        image = image.convert("RGBA" if "A" in mode else "RGB")
    if icc:
        image.info["icc_profile"] = icc
    return image


def resize(image: Image.Image, plan: Plan) -> Image.Image:
    """Crop and resample in one pass.

    Bicubic with a support scaled to the reduction factor (Pillow resamples by
    convolution, so it is antialiased at any factor): measured within ~1 dB PSNR
    of Lanczos-3 here at half its cost.  For large factors reduce() first does a
    cheap box-filter pass, keeping at least 2x the target for the real filter.
    """
    size = plan.content
    full = (0.0, 0.0, float(image.width), float(image.height))
    box = _scale_box(plan, image.size)
    if size == image.size and box == full:
        return image
    if _worth_banding(image, size, box):
        return _resize_in_bands(image, size, box)
    return image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=_REDUCING_GAP)


_REDUCING_GAP = 2.0
_BAND_ROWS = 128  # output rows per band
_BAND_ABOVE_PIXELS = 1_000_000  # a whole-image pass's intermediate larger than this is worth banding


def _worth_banding(image: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float]) -> bool:
    """Band when Pillow's intermediate (output width x source rows) is large and nothing else changes.

    Not for alpha modes (Pillow premultiplies by converting the whole image on
    every call) nor when reduce() would run first (its block grid would start
    anew in each band).
    """
    x0, y0, x1, y1 = box
    reduces = int((x1 - x0) / size[0] / _REDUCING_GAP) > 1 or int((y1 - y0) / size[1] / _REDUCING_GAP) > 1
    return (image.mode in ("RGB", "L", "CMYK") and not reduces and size[1] > _BAND_ROWS
            and size[0] * (y1 - y0) > _BAND_ABOVE_PIXELS)


def _resize_in_bands(image: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """The same resample as one resize() call, a band of output rows at a time.

    Pillow's resize(box=...) takes the filter's support from outside the box,
    so bands join without seams; what it saves is the intermediate of the
    horizontal pass, which for 1500x1125 -> 1024x768 is a 4.4 MB image.
    """
    x0, y0, x1, y1 = box
    step = (y1 - y0) / size[1]
    out = Image.new(image.mode, size)
    for top in range(0, size[1], _BAND_ROWS):
        bottom = min(size[1], top + _BAND_ROWS)
        band = image.resize((size[0], bottom - top), Image.Resampling.BICUBIC,
                            box=(x0, y0 + top * step, x1, y0 + bottom * step))
        out.paste(band, (0, top))
    out.info = dict(image.info)
    return out


def to_srgb(image: Image.Image) -> Image.Image:
    """Convert pixels to sRGB: through the embedded ICC profile when there is one, else plainly.

    The output then needs no profile, so dropping it loses nothing.
    """
    icc = image.info.get("icc_profile")
    target = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "L", "LA": "LA"}[image.mode]
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if image.mode in ("RGB", "RGBA", "CMYK") and source.profile.xcolor_space.strip() in ("RGB", "CMYK"):
                converted = ImageCms.profileToProfile(
                    image, source, _SRGB, outputMode=target if target != "LA" else "RGBA"
                )
                if converted is not None:
                    return converted
        except (OSError, ImageCms.PyCMSError, ValueError, TypeError) as exc:
            log.info("ignoring an unusable ICC profile: %s", exc)
    if image.mode != target:
        image = image.convert(target)
    return image


def pad(image: Image.Image, plan: Plan, background: tuple[int, int, int], keep_alpha: bool) -> Image.Image:
    """Place the content on a canvas of the exact box ('pad' fit)."""
    if plan.canvas == image.size:
        return image
    mode = "RGBA" if keep_alpha and image.mode in ("RGBA", "LA") else "RGB"
    canvas = Image.new(mode, plan.canvas, background + ((255,) if mode == "RGBA" else ()))
    layer = image.convert("RGBA")
    canvas.paste(layer, plan.offset, layer)
    return canvas


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite transparency onto ``background`` for formats without alpha (no black backgrounds)."""
    if image.mode not in ("RGBA", "LA"):
        return image
    canvas = Image.new("RGB", image.size, background)
    canvas.paste(image.convert("RGBA"), (0, 0), image.convert("RGBA"))
    return canvas


def _scale_box(plan: Plan, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The plan's crop box in the coordinates of ``size`` (smaller than the source after shrink-on-load)."""
    sx, sy = size[0] / plan.source[0], size[1] / plan.source[1]
    x0, y0, x1, y1 = plan.crop
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
