"""Synthetic, photo-like test images for the benchmark and the quality test.

Smooth gradients (what photos mostly are) plus fine noise (what makes JPEG
work hard), generated deterministically so runs are comparable.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageFilter


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    rnd = random.Random(seed)
    # a low-resolution random field, upscaled smoothly: large soft shapes
    small = Image.frombytes("RGB", (16, 12), bytes(rnd.randrange(256) for _ in range(16 * 12 * 3)))
    base = small.resize((width, height), Image.Resampling.BICUBIC)
    noise = Image.effect_noise((width, height), 40).convert("RGB")
    detail = Image.blend(base, noise, 0.18)
    return detail.filter(ImageFilter.SMOOTH) if width * height < 4_000_000 else detail


def jpeg(width: int, height: int, quality: int = 90, seed: int = 1) -> bytes:
    buf = io.BytesIO()
    photo(width, height, seed).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buf, "PNG")
    return buf.getvalue()
