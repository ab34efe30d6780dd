"""A small copy of the displayed picture, and what clients paint while the real image loads.

One thumbnail (at most 64 px on its long side, in sRGB) is made per job from
the decoded picture (already shrunk on load for JPEG); smart crop reads it too.
The BlurHash (4x3 components) is computed from an even smaller copy (4x3
components need no more than about 12 px across) with the ``blurhash``
library's arithmetic, made cheap: sRGB to linear from a table of the library's
own 256 values, and each component as sums of rows (its cosine along x), then
of columns (along y), each a dot product run by ``sum(map(mul, ...))`` in C.
The same components up to a float's last bits, so the library's string unless
a component falls that close to a step of its quantization (the tests compare
hundreds of random images): ~0.17 ms a job, where the library takes ~3.6 and
the per-pixel loop before this ~0.43. The average colour is ImageStat's, from
the histogram summed in C (0.13 -> 0.05 ms).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from operator import mul

from blurhash.blurhash import base83_encode, linear_to_srgb, sign_pow, srgb_to_linear
from PIL import Image

from . import steps

THUMB_SIDE = 64
_BLURHASH_SIDE = 12  # 4x3 components need a few samples per half-cycle; cost grows with pixels (16: 1.1 ms, 12: 0.66)
_COMPONENTS = (4, 3)
_PAPER = (255, 255, 255)  # what transparent parts are painted on, for the placeholder
_LINEAR = tuple(srgb_to_linear(v) for v in range(256))  # the library's own conversion, once per value


@dataclass(frozen=True)
class Placeholder:
    blurhash: str  # BlurHash, 4x3 components
    color: str  # the average colour, '#rrggbb'


def thumbnail(picture: Image.Image) -> Image.Image:
    """The picture at most THUMB_SIDE px on its long side, in sRGB, as RGB or RGBA."""
    scale = min(1.0, THUMB_SIDE / max(picture.size))
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    small = picture if size == picture.size else picture.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    small = steps.to_srgb(small)
    return small.convert("RGBA" if small.mode in ("RGBA", "LA") else "RGB")


def placeholder(thumb: Image.Image) -> Placeholder:
    flat = _on_paper(thumb)
    scale = min(1.0, _BLURHASH_SIDE / max(flat.size))
    tiny = flat.resize((max(1, round(flat.width * scale)), max(1, round(flat.height * scale))), Image.Resampling.BOX)
    planes = [_rows(band.tobytes(), tiny.width) for band in tiny.split()]
    return Placeholder(_blurhash(planes, *_COMPONENTS), _mean_colour(flat))


def encode_blurhash(rows: list[list[tuple[int, int, int]]], components_x: int, components_y: int) -> str:
    """``blurhash.encode`` (rows of sRGB pixels)."""
    planes = [[[pixel[c] for pixel in row] for row in rows] for c in range(3)]
    return _blurhash(planes, components_x, components_y)


def _mean_colour(flat: Image.Image) -> str:
    """'#rrggbb', each channel's mean rounded: ``ImageStat.Stat(flat).mean`` (the same exact sums), in C."""
    histogram, pixels = flat.histogram(), flat.width * flat.height
    means = (sum(map(mul, range(256), histogram[band : band + 256])) / pixels for band in (0, 256, 512))
    return "#" + "".join(f"{round(mean):02x}" for mean in means)


def _rows(band: bytes, width: int) -> list[bytes]:
    return [band[y : y + width] for y in range(0, len(band), width)]


@functools.lru_cache(maxsize=256)
def _cosines(length: int, components: int) -> tuple[tuple[float, ...], ...]:
    """cos(pi * k * n / length) for each frequency k < components and sample n < length, as the library has it."""
    return tuple(tuple(math.cos(math.pi * float(k) * float(n) / length) for n in range(length))
                 for k in range(components))


def _blurhash(planes: list, components_x: int, components_y: int) -> str:
    """The BlurHash of three planes (R, G, B: rows of sRGB values 0-255), as ``blurhash.encode`` computes it.

    The library sums norm * cos_x * cos_y * value over every pixel, one component at a time; here each row is
    first summed along x for each horizontal frequency, then those sums along y for each vertical one: the same
    sum in another order (a float's last bits may differ), with about a quarter of the multiplications, in C.
    """
    height, width = len(planes[0]), len(planes[0][0])
    linear = [[list(map(_LINEAR.__getitem__, row)) for row in plane] for plane in planes]
    cos_x, cos_y = _cosines(width, components_x), _cosines(height, components_y)
    along_x = [[[sum(map(mul, cosines, row)) for row in plane] for cosines in cos_x] for plane in linear]
    area = float(width) * float(height)
    components, max_ac = [], 0.0
    for j in range(components_y):
        for i in range(components_x):
            norm = 1.0 if (i == 0 and j == 0) else 2.0
            component = tuple(norm * sum(map(mul, cos_y[j], sums[i])) / area for sums in along_x)
            components.append(component)
            if not (i == 0 and j == 0):
                max_ac = max(max_ac, abs(component[0]), abs(component[1]), abs(component[2]))
    dc = (linear_to_srgb(components[0][0]) << 16) + (linear_to_srgb(components[0][1]) << 8) \
        + linear_to_srgb(components[0][2])
    quant_max_ac = int(max(0, min(82, math.floor(max_ac * 166 - 0.5))))
    ac_norm = float(quant_max_ac + 1) / 166.0

    def quant(value: float) -> int:
        return int(max(0.0, min(18.0, math.floor(sign_pow(value / ac_norm, 0.5) * 9.0 + 9.5))))

    text = base83_encode((components_x - 1) + (components_y - 1) * 9, 1) + base83_encode(quant_max_ac, 1)
    text += base83_encode(dc, 4)
    for r, g, b in components[1:]:
        text += base83_encode(quant(r) * 19 * 19 + quant(g) * 19 + quant(b), 2)
    return text


def _on_paper(thumb: Image.Image) -> Image.Image:
    if thumb.mode != "RGBA":
        return thumb.convert("RGB")
    paper = Image.new("RGB", thumb.size, _PAPER)
    paper.paste(thumb, (0, 0), thumb)
    return paper
