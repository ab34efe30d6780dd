"""The image pipeline: bytes in, encoded outputs out.

    open (header only) -> plan every output -> shrink on load -> decode
    -> picture steps (once per still image, or per frame of an animation)
    -> output steps (per output) -> encode

Geometry is computed before any pixel is decoded, so the JPEG decoder can
scale down by up to 8x while decoding; orientation is applied after that (on
the small image, not the full one).  One decode serves every output.  A still
image and each frame of an animation go through the same two lists of steps,
so the two can never drift apart.  No Redis, S3 or Flask in here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from . import steps
from .decode import decode, frame_count, frames
from .encode import encode, encode_animation
from .formats import ImageInfo, OutputFormat, choose_format, open_image
from .geometry import plan
from .shrink import shrink_on_load
from .spec import JobSpec, OutputSpec
from .steps import Target

# Run once on every decoded picture, in this order.
PICTURE_STEPS: tuple[Callable[[Image.Image, ImageInfo], Image.Image], ...] = (
    steps.orient,
    steps.normalize_mode,
)
# Run for each output on the result of the picture steps, in this order.
OUTPUT_STEPS: tuple[Callable[[Image.Image, Target], Image.Image], ...] = (
    steps.resize,
    steps.to_srgb,
    steps.pad,
    steps.flatten,
)


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
    name: str
    quality: int | None
    target: Target


def process(data: bytes, job: JobSpec, limits: ImageLimits, stats: dict[str, float] | None = None) -> list[Output]:
    """Decode once, make every output of ``job``.  ``stats`` (if given) receives seconds spent encoding."""
    stats = stats if stats is not None else {}
    image, info = open_image(data, limits.max_input_pixels)
    with image:
        tasks = [_task(o, info, limits) for o in job.outputs]
        if info.animated and any(t.target.format.animation for t in tasks):
            return _animation(image, info, tasks, limits, stats)
        image = shrink_on_load(image, max(t.target.plan.scale for t in tasks))
        picture = _picture(decode(image), info)
        return [_encode_still(_output(picture, t.target), t, stats) for t in tasks]


def _task(spec: OutputSpec, info: ImageInfo, limits: ImageLimits) -> _Task:
    target = Target(plan(info.oriented_size, spec, limits.max_output_dimension), choose_format(spec.format, info),
                    spec.background)
    return _Task(spec.name, spec.quality, target)


def _picture(image: Image.Image, info: ImageInfo) -> Image.Image:
    for step in PICTURE_STEPS:
        image = step(image, info)
    return image


def _output(image: Image.Image, target: Target) -> Image.Image:
    for step in OUTPUT_STEPS:
        image = step(image, target)
    return image


def _encode_still(image: Image.Image, task: _Task, stats: dict[str, float]) -> Output:
    started = time.perf_counter()
    data = encode(image, task.target.format, task.quality)
    stats["encode"] = stats.get("encode", 0.0) + time.perf_counter() - started
    return Output(task.name, data, *image.size, task.target.format)


def _animation(image: Image.Image, info: ImageInfo, tasks: Sequence[_Task], limits: ImageLimits,
               stats: dict[str, float]) -> list[Output]:
    """Every frame through the same steps for animated outputs (keeping timing and loop); stills use frame 1.

    Frames are decoded one at a time and only their outputs are kept, so
    memory follows the output size, not the input's.
    """
    n_frames = frame_count(image, limits.max_frames)
    animated = [t for t in tasks if t.target.format.animation]
    made: dict[str, list[Image.Image]] = {t.name: [] for t in animated}
    durations: list[int] = []
    loop = int(image.info.get("loop", 0) or 0)
    first: Image.Image | None = None
    for frame in frames(image, n_frames):
        duration = frame.info.get("duration")
        durations.append(int(duration) if duration is not None else 100)
        picture = _picture(frame, info)
        if first is None:
            first = picture
        for task in animated:
            made[task.name].append(_output(picture, task.target))
    assert first is not None
    outputs = []
    for task in tasks:
        if not task.target.format.animation:
            outputs.append(_encode_still(_output(first, task.target), task, stats))
            continue
        started = time.perf_counter()
        data = encode_animation(made[task.name], durations, loop, task.target.format, task.quality)
        stats["encode"] = stats.get("encode", 0.0) + time.perf_counter() - started
        width, height = made[task.name][0].size
        outputs.append(Output(task.name, data, width, height, task.target.format))
    return outputs
