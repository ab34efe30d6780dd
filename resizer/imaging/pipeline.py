"""The image pipeline: bytes in, encoded outputs out.

    open (header only) -> plan every output -> shrink on load -> decode
    -> orient -> normalize mode -> per output: resize -> to sRGB -> pad
    -> flatten -> encode

Geometry is computed before any pixel is decoded, so the JPEG decoder can
scale down by up to 8x while decoding; orientation is applied after that (on
the small image, not the full one).  One decode serves every variant.
No Redis, S3 or Flask in here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from .spec import JobSpec, OutputSpec
from . import steps
from .encode import encode, encode_animation
from .decode import decode, frame_count, frames
from .formats import ImageInfo, OutputFormat, choose_format, open_image
from .geometry import Plan, plan


@dataclass(frozen=True)
class ImageLimits:
    max_input_pixels: int = 100_000_000
    max_output_dimension: int = 8192
    max_frames: int = 300


@dataclass(frozen=True)
class Output:
    name: str
    data: bytes
    width: int
    height: int
    format: OutputFormat


@dataclass(frozen=True)
class _Task:
    spec: OutputSpec
    plan: Plan
    format: OutputFormat


def process(data: bytes, job: JobSpec, limits: ImageLimits, stats: dict[str, float] | None = None) -> list[Output]:
    """Decode once, make every output.  ``stats`` (if given) receives seconds spent encoding."""
    stats = stats if stats is not None else {}
    image, info = open_image(data, limits.max_input_pixels)
    with image:
        tasks = [
            _Task(o, plan(info.oriented_size, o, limits.max_output_dimension), choose_format(o.format, info))
            for o in job.outputs
        ]
        if info.animated and any(t.format.animation for t in tasks):
            return _process_animation(image, info, tasks, limits, stats)
        image = steps.shrink_on_load(image, max(t.plan.scale for t in tasks))
        base = steps.normalize_mode(steps.orient(decode(image), info.orientation))
        return [_still(base, t, stats) for t in tasks]


def _still(base: Image.Image, task: _Task, stats: dict[str, float]) -> Output:
    image = steps.resize(base, task.plan)
    image = steps.to_srgb(image)
    image = steps.pad(image, task.plan, task.spec.background, keep_alpha=task.format.alpha)
    if not task.format.alpha:
        image = steps.flatten(image, task.spec.background)
    started = time.perf_counter()
    data = encode(image, task.format, task.spec.quality)
    stats["encode"] = stats.get("encode", 0.0) + time.perf_counter() - started
    return Output(task.spec.name, data, *image.size, task.format)


def _process_animation(image: Image.Image, info: ImageInfo, tasks: list[_Task], limits: ImageLimits,
                       stats: dict[str, float]) -> list[Output]:
    """Resize every frame for animated outputs (keeping timing and loop); still outputs use frame 0.

    Frames are decoded one at a time and only their resized copies are kept,
    so memory follows the output size, not the input's.
    """
    n_frames = frame_count(image, limits.max_frames)
    animated = [t for t in tasks if t.format.animation]
    resized_frames: dict[str, list[Image.Image]] = {t.spec.name: [] for t in animated}
    durations: list[int] = []
    loop = int(image.info.get("loop", 0) or 0)
    first: Image.Image | None = None
    for index, frame in enumerate(frames(image, n_frames)):
        if index == 0:
            first = frame
        duration = frame.info.get("duration")
        durations.append(int(duration) if duration is not None else 100)
        for task in animated:
            resized = steps.pad(steps.resize(frame, task.plan), task.plan, task.spec.background, keep_alpha=True)
            resized_frames[task.spec.name].append(resized)
    assert first is not None
    outputs = []
    for task in tasks:
        if task.format.animation:
            started = time.perf_counter()
            data = encode_animation(resized_frames[task.spec.name], durations, loop, task.format, task.spec.quality)
            stats["encode"] = stats.get("encode", 0.0) + time.perf_counter() - started
            width, height = task.plan.canvas
            outputs.append(Output(task.spec.name, data, width, height, task.format))
        else:
            outputs.append(_still(first, task, stats))
    return outputs
