"""Watermark images: checking an upload, decoding one for a job, fitting it to an output.

A watermark is a still PNG or WebP (the formats with alpha that every client
can make).  ``inspect_watermark`` is what the API runs on an upload; the
worker then decodes the stored bytes with ``load_watermark`` and builds one
``Overlay`` per output (``overlay``), which the ``watermark`` step draws after
the resize and before encoding, on every frame of an animation too.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ..errors import MissingImage, PayloadTooLarge, UnsupportedImageFormat
from . import steps
from .decode import decode
from .formats import open_image, sniff
from .geometry import place
from .spec import WatermarkSpec
from .steps import Overlay

WATERMARK_FORMATS = ("PNG", "WEBP")


@dataclass(frozen=True)
class WatermarkLimits:
    max_bytes: int = 1_048_576
    max_pixels: int = 4_000_000


def inspect_watermark(data: bytes, limits: WatermarkLimits) -> tuple[int, int]:
    """Check a watermark upload completely (it is decoded); its (width, height) as displayed.

    Raises ``MissingImage``, ``PayloadTooLarge``, ``UnsupportedImageFormat``
    (not PNG/WebP, or animated), ``ImageTooLarge`` or ``CorruptImage``.
    """
    if not data:
        raise MissingImage("The watermark is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"The watermark is {len(data):,} bytes; the limit is {limits.max_bytes:,}.")
    image = load_watermark(data, limits.max_pixels)
    return image.size


def load_watermark(data: bytes, max_pixels: int) -> Image.Image:
    """Decode a watermark (strictly, upright, in sRGB) as RGBA."""
    if sniff(data[:16]) not in WATERMARK_FORMATS:
        raise UnsupportedImageFormat("A watermark must be a PNG or WebP image.")
    image, info = open_image(data, max_pixels)
    with image:
        if info.animated:
            raise UnsupportedImageFormat("A watermark must be a still image, not an animation.")
        picture = steps.normalize_mode(steps.orient(decode(image), info))
        return steps.to_srgb(picture).convert("RGBA")


def overlay(mark: Image.Image, spec: WatermarkSpec, canvas: tuple[int, int]) -> Overlay:
    """The watermark scaled for an output of size ``canvas`` and placed by the spec's gravity and margin.

    ``scale`` sets its width as a fraction of the output's (aspect kept); it is
    never larger than the output inside the margins (a margin too large for a
    small output is reduced to leave it at least one pixel).
    """
    margin = max(0, min(spec.margin, (canvas[0] - 1) // 2, (canvas[1] - 1) // 2))
    room = (canvas[0] - 2 * margin, canvas[1] - 2 * margin)
    width = canvas[0] * spec.scale if spec.scale is not None else mark.width
    height = mark.height * width / mark.width
    shrink = min(1.0, room[0] / width, room[1] / height)
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    image = mark if size == mark.size else mark.resize(size, Image.Resampling.LANCZOS)
    if spec.opacity < 1:
        alpha = image.getchannel("A").point(lambda a: round(a * spec.opacity))
        image = image.copy()
        image.putalpha(alpha)
    return Overlay(image, place(size, canvas, spec.gravity, margin))
