"""The pipeline's steps: small pure functions over Pillow images.

Each step does one thing and returns its input unchanged when it has nothing
to do.  Two kinds, each with one signature so the pipeline can hold them in a
list: picture steps ``(image, info)`` run once on every decoded picture (a
still image, or each frame of an animation); output steps ``(image, target)``
run for each output.  The order lives in ``pipeline.py``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageCms

from .formats import ImageInfo, OutputFormat
from .geometry import Plan
from .spec import Rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overlay:
    """A watermark ready for one output: scaled, its alpha already multiplied by the opacity."""

    image: Image.Image  # RGBA, sRGB
    position: tuple[int, int]  # top-left corner on the output canvas


@dataclass(frozen=True, eq=False)
class Target:
    """What the output steps need to know about one output."""

    plan: Plan
    format: OutputFormat
    background: Rgb
    overlay: Overlay | None = None


_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# -- picture steps -------------------------------------------------------------------------------
def orient(image: Image.Image, info: ImageInfo) -> Image.Image:
    """Apply the EXIF orientation, so outputs need (and carry) no orientation tag."""
    for op in _TRANSPOSE.get(info.orientation, ()):
        image = image.transpose(op)
    return image


def normalize_mode(image: Image.Image, info: ImageInfo | None = None) -> Image.Image:
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


# -- output steps --------------------------------------------------------------------------------
def resize(image: Image.Image, target: Target) -> Image.Image:
    """Crop and resample in one pass.

    Bicubic with a support scaled to the reduction factor (Pillow resamples by
    convolution, so it is antialiased at any factor): measured within ~1 dB PSNR
    of Lanczos-3 here at half its cost.  For large factors reduce() first does a
    cheap box-filter pass, keeping at least 2x the target for the real filter.
    """
    size = target.plan.content
    full = (0.0, 0.0, float(image.width), float(image.height))
    box = _scale_box(target.plan, image.size)
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


def to_srgb(image: Image.Image, target: Target | None = None) -> Image.Image:
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


def pad(image: Image.Image, target: Target) -> Image.Image:
    """Place the content on a canvas of the exact box ('pad' fit)."""
    plan = target.plan
    if plan.canvas == image.size:
        return image
    mode = "RGBA" if target.format.alpha and image.mode in ("RGBA", "LA") else "RGB"
    canvas = Image.new(mode, plan.canvas, target.background + ((255,) if mode == "RGBA" else ()))
    layer = image.convert("RGBA")
    canvas.paste(layer, plan.offset, layer)
    return canvas


def watermark(image: Image.Image, target: Target) -> Image.Image:
    """Draw the overlay over the output (alpha-composited: a transparent output stays transparent around it)."""
    if target.overlay is None:
        return image
    has_alpha = image.mode in ("RGBA", "LA")
    base = image.convert("RGBA")
    base.alpha_composite(target.overlay.image, dest=target.overlay.position)
    return base if has_alpha else base.convert("RGB")


def flatten(image: Image.Image, target: Target) -> Image.Image:
    """Composite transparency onto the background for formats without alpha (no black backgrounds)."""
    if target.format.alpha or image.mode not in ("RGBA", "LA"):
        return image
    canvas = Image.new("RGB", image.size, target.background)
    canvas.paste(image.convert("RGBA"), (0, 0), image.convert("RGBA"))
    return canvas


def _scale_box(plan: Plan, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The plan's crop box in the coordinates of ``size`` (smaller than the source after shrink-on-load)."""
    sx, sy = size[0] / plan.source[0], size[1] / plan.source[1]
    x0, y0, x1, y1 = plan.crop
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
