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
# Where 'cover' keeps the image and 'pad' puts it.
GRAVITIES = ("center", "north", "south", "east", "west", "north_east", "north_west", "south_east", "south_west")
FORMATS = ("jpeg", "png", "webp", "avif", "auto")

Rgb = tuple[int, int, int]


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


@dataclass(frozen=True)
class JobSpec:
    """Every output of one upload (the kernel reads ``outputs``; the worker also reads ``callback_url``)."""

    outputs: tuple[OutputSpec, ...]
    callback_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as it travels in the queue."""
        return {"outputs": [asdict(o) for o in self.outputs], "callback_url": self.callback_url}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        return cls(tuple(_output(o) for o in data["outputs"]), data.get("callback_url"))


def _output(data: dict[str, Any]) -> OutputSpec:
    return OutputSpec(**{**data, "background": tuple(data["background"])})
