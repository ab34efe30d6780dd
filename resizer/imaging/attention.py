"""Smart crop: where in the picture a crop keeps the most interesting part (libvips' ``attention`` idea).

Interest is measured per pixel of a small copy of the picture (about 64 px on
its long side, made once per job): edges and detail (a Laplacian of the
luminance), saturated colour, and skin tones.  The crop window is then slid
over that map and the position with the most interest inside wins; unless it
clearly beats the centred window (a flat or evenly busy picture), the crop
stays centred.  The cost is a few thousand pixels of arithmetic, whatever the
size of the upload.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter, ImageMath

from .geometry import Plan, move_crop

# How much each cue counts, in units of one grey level of edge strength.
_SATURATION_WEIGHT = 0.5
_SKIN_WEIGHT = 1.0
# Skin tones, by chromaticity r/(r+g+b), g/(r+g+b): a region around typical skin of all complexions.
_SKIN_R, _SKIN_G, _SKIN_RADIUS = 0.46, 0.31, 0.1
# The best window must beat the centred one by this factor, and by this much interest per pixel of
# the window (so the faint texture of a smooth gradient, or JPEG noise, never moves a crop).
_CLEAR_WIN = 1.1
_MIN_GAIN = 2.0
# Windows within this fraction of the best score count as equally good.
_TIE = 0.01


def smart_crop(plan: Plan, thumb: Image.Image) -> Plan:
    """The plan with its crop moved onto the most interesting part of the picture ``thumb`` shows (same size)."""
    x0, y0, x1, y1 = plan.crop
    if (x1 - x0, y1 - y0) == (float(plan.source[0]), float(plan.source[1])):
        return plan  # nothing is cropped away
    kx, ky = thumb.width / plan.source[0], thumb.height / plan.source[1]
    corner = best_window(interest(thumb), (round((x1 - x0) * kx), round((y1 - y0) * ky)))
    if corner is None:  # nothing stands out: the centre, as planned
        return plan
    return move_crop(plan, corner[0] / kx, corner[1] / ky)


def interest(thumb: Image.Image) -> list[list[float]]:
    """Interest of each pixel of ``thumb`` (RGB or RGBA; transparent parts count for nothing), by rows.

    Computed with Pillow's per-band arithmetic (C loops), not per pixel in Python.
    """
    rgb = thumb.convert("RGB")
    width, height = rgb.size
    # Pillow leaves a 3x3 filter's outermost pixels unfiltered: they are not edges.
    edges = Image.new("L", rgb.size, 0)
    if width > 2 and height > 2:
        edges.paste(rgb.convert("L").filter(ImageFilter.FIND_EDGES).crop((1, 1, width - 1, height - 1)), (1, 1))
    _, saturation, value = rgb.convert("HSV").split()
    vivid = ImageChops.multiply(saturation, value)  # saturation weighed by brightness: dark hues are noise
    r, g, b = (band.convert("F") for band in rgb.split())
    score = ImageMath.lambda_eval(
        lambda a: a["e"] + _SATURATION_WEIGHT * a["v"] + _SKIN_WEIGHT * _skin(a),
        e=edges.convert("F"), v=vivid.convert("F"), r=r, g=g, b=b,
    )
    if thumb.mode == "RGBA":
        score = ImageMath.lambda_eval(lambda a: a["s"] * a["alpha"] / 255, s=score,
                                      alpha=thumb.getchannel("A").convert("F"))
    values = list(score.get_flattened_data())
    return [values[y * width : (y + 1) * width] for y in range(height)]


def best_window(rows: list[list[float]], window: tuple[int, int]) -> tuple[int, int] | None:
    """Top-left corner of the ``window``-sized box holding the most interest; None when no box clearly beats
    the centred one (keep the centre)."""
    height, width = len(rows), len(rows[0])
    win_w, win_h = min(width, max(1, window[0])), min(height, max(1, window[1]))
    table = _integral(rows)

    def total(x: int, y: int) -> float:
        return table[y + win_h][x + win_w] - table[y][x + win_w] - table[y + win_h][x] + table[y][x]

    centre = ((width - win_w) // 2, (height - win_h) // 2)
    scores = {(x, y): total(x, y) for y in range(height - win_h + 1) for x in range(width - win_w + 1)}
    best = max(scores.values())
    gain = best - scores[centre]
    if gain <= (_CLEAR_WIN - 1) * scores[centre] or gain <= _MIN_GAIN * win_w * win_h:
        return None
    # A subject smaller than the window is inside many windows that score (nearly) the same: take the
    # middle of those, which centres it, rather than the first, which puts it against an edge.
    ties = [xy for xy, score in scores.items() if score >= best * (1 - _TIE)]
    return round(sum(x for x, _ in ties) / len(ties)), round(sum(y for _, y in ties) / len(ties))


def _skin(a: dict):
    """0..255: how close each pixel's chromaticity (r, g over r+g+b) is to skin; dark pixels have no reliable hue."""
    total = a["r"] + a["g"] + a["b"] + 1
    dr, dg = a["r"] / total - _SKIN_R, a["g"] / total - _SKIN_G
    closeness = a["max"](1 - (dr * dr + dg * dg) / (_SKIN_RADIUS * _SKIN_RADIUS), 0)
    lit = a["min"](a["max"](total - 120, 0), 1)
    return closeness * lit * 255


def _integral(rows: list[list[float]]) -> list[list[float]]:
    """Summed-area table with a zero row and column in front: any box's sum in four lookups."""
    width = len(rows[0])
    table = [[0.0] * (width + 1)]
    for row in rows:
        running, above, line = 0.0, table[-1], [0.0]
        for x, value in enumerate(row):
            running += value
            line.append(above[x + 1] + running)
        table.append(line)
    return table
