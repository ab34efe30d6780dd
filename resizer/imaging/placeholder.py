"""A small copy of the displayed picture, and what clients paint while the real image loads.

One thumbnail (at most 64 px on its long side, in sRGB) is made per job from
the decoded picture (already shrunk on load for JPEG); smart crop reads it too.
The BlurHash (4x3 components) comes from the ``blurhash`` library, fed an even
smaller copy: its pure-Python encoder costs per pixel, and 4x3 components need
no more than about 12 px across (about 0.7 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import blurhash
from PIL import Image, ImageStat

from . import steps

THUMB_SIDE = 64
_BLURHASH_SIDE = 12  # 4x3 components need a few samples per half-cycle; cost grows with pixels (16: 1.1 ms, 12: 0.66)
_COMPONENTS = (4, 3)
_PAPER = (255, 255, 255)  # what transparent parts are painted on, for the placeholder


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
    mean = ImageStat.Stat(flat).mean
    color = "#" + "".join(f"{round(v):02x}" for v in mean[:3])
    scale = min(1.0, _BLURHASH_SIDE / max(flat.size))
    tiny = flat.resize((max(1, round(flat.width * scale)), max(1, round(flat.height * scale))), Image.Resampling.BOX)
    data = list(tiny.get_flattened_data())
    rows = [data[y * tiny.width : (y + 1) * tiny.width] for y in range(tiny.height)]
    return Placeholder(blurhash.encode(rows, *_COMPONENTS), color)


def _on_paper(thumb: Image.Image) -> Image.Image:
    if thumb.mode != "RGBA":
        return thumb.convert("RGB")
    paper = Image.new("RGB", thumb.size, _PAPER)
    paper.paste(thumb, (0, 0), thumb)
    return paper
