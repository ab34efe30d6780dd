"""Output geometry, computed once from the (oriented) source size and the options.

Pure arithmetic: no pixels are touched here, so the worker knows every output's
size before it decodes anything (which is what lets JPEG decoding shrink on
load), and the rules can be checked by property tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .spec import OutputSpec

# Where 'cover' keeps the image, 'pad' puts it and a watermark sits: fraction of the slack on each axis.
_ANCHOR = {  # keys: spec.ANCHORS
    "center": (0.5, 0.5),
    "north": (0.5, 0.0),
    "south": (0.5, 1.0),
    "east": (1.0, 0.5),
    "west": (0.0, 0.5),
    "north_east": (1.0, 0.0),
    "north_west": (0.0, 0.0),
    "south_east": (1.0, 1.0),
    "south_west": (0.0, 1.0),
}


@dataclass(frozen=True)
class Plan:
    """How one output is made from a source of ``source`` size."""

    source: tuple[int, int]
    crop: tuple[float, float, float, float]  # region of the source that is resized
    content: tuple[int, int]  # size the cropped region is resized to
    canvas: tuple[int, int]  # final output size (== content except for 'pad')
    offset: tuple[int, int]  # where the content sits on the canvas

    @property
    def scale(self) -> float:
        """Largest source->output scale factor (what decoding may shrink to)."""
        x0, y0, x1, y1 = self.crop
        return max(self.content[0] / (x1 - x0), self.content[1] / (y1 - y0))


def plan(source: tuple[int, int], spec: OutputSpec, max_dimension: int) -> Plan:
    src_w, src_h = source
    exact_w, exact_h = _box(src_w, src_h, spec.width, spec.height, max_dimension)
    box_w, box_h = _side(exact_w, max_dimension), _side(exact_h, max_dimension)
    full = (0.0, 0.0, float(src_w), float(src_h))
    # 'smart' is planned as the centre; the pipeline moves the crop once it has seen the pixels.
    gx, gy = anchor(spec.gravity)

    if spec.fit == "fill":
        size = (box_w, box_h) if spec.enlarge else (min(box_w, src_w), min(box_h, src_h))
        return Plan(source, full, size, size, (0, 0))

    if spec.fit == "cover":
        scale = max(box_w / src_w, box_h / src_h)
        if not spec.enlarge and scale > 1:
            scale = 1.0
            box_w, box_h = min(box_w, src_w), min(box_h, src_h)
        crop_w, crop_h = min(src_w, box_w / scale), min(src_h, box_h / scale)
        x0, y0 = (src_w - crop_w) * gx, (src_h - crop_h) * gy
        return Plan(source, (x0, y0, x0 + crop_w, y0 + crop_h), (box_w, box_h), (box_w, box_h), (0, 0))

    # contain and pad: the whole image inside the box, aspect ratio kept.  The scale comes from the
    # unrounded box, so a side that was asked for is met exactly (7000x5000 at width 1024 -> 1024x731).
    scale = min(exact_w / src_w, exact_h / src_h)
    if not spec.enlarge:
        scale = min(scale, 1.0)
    content = (_side(src_w * scale, box_w), _side(src_h * scale, box_h))
    if spec.fit == "contain":
        return Plan(source, full, content, content, (0, 0))
    offset = (round((box_w - content[0]) * gx), round((box_h - content[1]) * gy))
    return Plan(source, full, content, (box_w, box_h), offset)


def anchor(gravity: str) -> tuple[float, float]:
    """Fraction of the slack on each axis that goes before the thing placed ('smart' plans as the centre)."""
    return _ANCHOR["center" if gravity == "smart" else gravity]


def place(inner: tuple[int, int], outer: tuple[int, int], gravity: str, margin: int = 0) -> tuple[int, int]:
    """Top-left corner of a box of size ``inner`` placed by ``gravity`` in ``outer``, ``margin`` in from its edges."""
    gx, gy = anchor(gravity)
    x = margin + (outer[0] - inner[0] - 2 * margin) * gx
    y = margin + (outer[1] - inner[1] - 2 * margin) * gy
    return round(x), round(y)


def move_crop(p: Plan, x0: float, y0: float) -> Plan:
    """The same plan with its crop (same size) moved to start at (x0, y0), kept inside the source."""
    cx0, cy0, cx1, cy1 = p.crop
    width, height = cx1 - cx0, cy1 - cy0
    x0 = min(max(0.0, x0), p.source[0] - width)
    y0 = min(max(0.0, y0), p.source[1] - height)
    return replace(p, crop=(x0, y0, x0 + width, y0 + height))


def _box(src_w: int, src_h: int, width: int | None, height: int | None, max_dim: int) -> tuple[float, float]:
    """The target box, unrounded; a missing side follows the source's aspect ratio, within max_dim."""
    if width is not None and height is not None:
        return float(width), float(height)
    if width is not None:
        height_f = src_h * width / src_w
        width_f = float(width)
    else:
        assert height is not None
        width_f = src_w * height / src_h
        height_f = float(height)
    shrink = min(1.0, max_dim / width_f, max_dim / height_f)
    return width_f * shrink, height_f * shrink


def _side(value: float, limit: int) -> int:
    """Round a side length, never to 0 and never past ``limit``."""
    return max(1, min(limit, round(value)))
