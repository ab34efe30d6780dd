"""What the kernel is asked to make: plain frozen data, and the one list of each option's values.

The edge (``resizer.options``) validates client input with pydantic and
converts it once into these types; the kernel, the worker and the CLI only
ever see these.  The value lists below are the single source for the pydantic
models (hence the OpenAPI document) and the CLI's choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FITS = ("fill", "contain", "cover", "pad")
# Where a thing sits in a box: the part of the image 'cover' keeps, the image on a 'pad' canvas, a watermark.
ANCHORS = ("center", "north", "south", "east", "west", "north_east", "north_west", "south_east", "south_west")
# The 'gravity' option: an anchor, or 'smart' ('cover' keeps the most interesting part; elsewhere the centre).
GRAVITIES = (*ANCHORS, "smart")
FORMATS = ("jpeg", "png", "webp", "avif", "auto")

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class WatermarkSpec:
    """An overlay drawn on an output after the resize (see the v1.1 section of the API contract)."""

    image: str  # the watermark's name; its bytes are handed to process() by name
    gravity: str = "south_east"  # one of ANCHORS
    opacity: float = 0.5  # 0..1, multiplies the overlay's own alpha
    scale: float | None = None  # overlay width as a fraction of the output's; None: its own size
    margin: int = 0  # pixels in from the edges it is anchored to


@dataclass(frozen=True)
class OutputSpec:
    """One output of a job, every default resolved."""

    name: str
    width: int | None  # None: follows the aspect ratio of the other side
    height: int | None
    fit: str  # one of FITS
    gravity: str  # one of GRAVITIES
    enlarge: bool
    format: str  # one of FORMATS
    quality: int | None  # None: the format's default
    background: Rgb
    watermark: WatermarkSpec | None = None


@dataclass(frozen=True)
class JobSpec:
    """Every output of one upload (the kernel reads ``outputs``; the worker also reads ``callback_url``)."""

    outputs: tuple[OutputSpec, ...]
    callback_url: str | None = None

    def watermark_names(self) -> set[str]:
        """The watermarks the job draws: the API checks they exist, the worker fetches their bytes."""
        return {o.watermark.image for o in self.outputs if o.watermark is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as it travels in the queue."""
        return {"outputs": [asdict(o) for o in self.outputs], "callback_url": self.callback_url}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        return cls(tuple(_output(o) for o in data["outputs"]), data.get("callback_url"))


def _output(data: dict[str, Any]) -> OutputSpec:
    mark = data.get("watermark")
    return OutputSpec(**{**data, "background": tuple(data["background"]),
                         "watermark": WatermarkSpec(**mark) if mark else None})
