"""Encoding: one call after the steps, writing no metadata.

Nothing from the input's ``info`` reaches the encoder (Pillow would otherwise
carry an ICC profile into PNGs); EXIF, GPS and XMP are never written.
"""

from __future__ import annotations

import io

from PIL import Image

from .formats import OutputFormat


def encode(image: Image.Image, fmt: OutputFormat, quality: int | None) -> bytes:
    image.info = {}
    buf = io.BytesIO()
    image.save(buf, fmt.pil, **_params(fmt, quality, image.mode))
    return buf.getvalue()


def encode_animation(
    frames: list[Image.Image], durations: list[int], loop: int, fmt: OutputFormat, quality: int | None
) -> bytes:
    for frame in frames:
        frame.info = {}
    buf = io.BytesIO()
    extra = {"disposal": 2, "optimize": False} if fmt.name == "gif" else _params(fmt, quality, frames[0].mode)
    frames[0].save(
        buf, fmt.pil, save_all=True, append_images=frames[1:], duration=durations, loop=loop, **extra
    )
    return buf.getvalue()


def _params(fmt: OutputFormat, quality: int | None, mode: str) -> dict:
    q = quality if quality is not None else fmt.default_quality
    if fmt.name == "jpeg":
        return {"quality": q, "optimize": False, "progressive": False}
    if fmt.name == "webp":
        return {"quality": q, "method": 4}
    if fmt.name == "avif":
        return {"quality": q, "speed": 8}
    if fmt.name == "png":
        # zlib level 6 is the usual size/speed balance; PNG has no quality.
        return {"compress_level": 6}
    return {}
