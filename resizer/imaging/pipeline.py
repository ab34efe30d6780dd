"""The image pipeline: bytes in, encoded outputs (and what the upload was) out.

    open (header only) -> plan every output -> shrink on load -> decode
    -> picture steps (once per still image, or per frame of an animation)
    -> [first picture: thumbnail -> smart crops, placeholder]
    -> output steps (per output) -> encode

Geometry is computed before any pixel is decoded, so the JPEG decoder can
scale down by up to 8x while decoding; orientation is applied after that (on
the small image, not the full one).  One decode serves every output.  A still
image and each frame of an animation go through the same two lists of steps,
so the two can never drift apart.  A smart crop keeps the size planned and
only moves, once, from the first picture, so an animation's frames agree.
No Redis, S3 or Flask in here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from PIL import Image

from ..errors import CorruptImage, InvalidParameter
from . import steps
from .attention import smart_crop
from .decode import decode, frame_count, frames
from .encode import encode, encode_animation
from .formats import ImageInfo, OutputFormat, choose_format, open_image
from .geometry import plan
from .placeholder import Placeholder, placeholder, thumbnail
from .shrink import shrink_on_load
from .spec import JobSpec, OutputSpec
from .steps import Target
from .watermark import load_watermark, overlay

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
    steps.watermark,
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


# The API's names of the input formats.
_SOURCE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "AVIF": "avif", "TIFF": "tiff",
                   "BMP": "bmp", "HEIF": "heic"}


@dataclass(frozen=True)
class Source:
    """The upload as displayed (after EXIF orientation)."""

    width: int
    height: int
    format: str  # jpeg, png, gif, webp, avif, tiff, bmp, heic
    bytes: int


@dataclass(frozen=True)
class Result:
    """Every output of a job, what the upload was, and its placeholder.

    Iterating a Result (indexing it, taking its len) goes over ``outputs``: the 1.0
    interface, where process() returned the list of outputs.
    """

    outputs: tuple[Output, ...]
    source: Source
    placeholder: Placeholder

    def __iter__(self) -> Iterator[Output]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, index: int) -> Output:
        return self.outputs[index]


@dataclass(frozen=True)
class _Task:
    name: str
    quality: int | None
    smart: bool  # move the crop to the most interesting part once the pixels are known
    target: Target


def process(data: bytes, job: JobSpec, limits: ImageLimits, stats: dict[str, float] | None = None, *,
            watermarks: Mapping[str, bytes] | None = None) -> Result:
    """Decode ``data`` once and make every output of ``job``.

    ``watermarks`` holds the bytes of each watermark the job names (by name).
    ``stats`` (if given) receives seconds spent encoding under "encode".
    Raises a ``ResizerError`` for anything wrong with the image or a watermark.
    """
    stats = stats if stats is not None else {}
    image, info = open_image(data, limits.max_input_pixels)
    marks = _watermarks(job, watermarks or {}, limits)
    source = Source(*info.oriented_size, _SOURCE_FORMATS[info.format], len(data))
    with image:
        tasks = [_task(o, info, limits, marks) for o in job.outputs]
        if info.animated and any(t.target.format.animation for t in tasks):
            outputs, thumb = _animation(image, info, tasks, limits, stats)
        else:
            image = shrink_on_load(image, max(t.target.plan.scale for t in tasks))
            picture = _picture(decode(image), info)
            thumb = thumbnail(picture)
            tasks = [_aim(t, thumb) for t in tasks]
            outputs = [_encode_still(_output(picture, t.target), t, stats) for t in tasks]
    return Result(tuple(outputs), source, placeholder(thumb))


def _watermarks(job: JobSpec, given: Mapping[str, bytes], limits: ImageLimits) -> dict[str, Image.Image]:
    """Each watermark the job names, decoded once."""
    marks = {}
    for name in sorted(job.watermark_names()):
        if name not in given:
            raise InvalidParameter(f"The watermark '{name}' does not exist (any more).")
        try:
            marks[name] = load_watermark(given[name], limits.max_input_pixels)
        except CorruptImage as exc:
            raise CorruptImage(f"The watermark '{name}' cannot be decoded: {exc.message}") from None
    return marks


def _task(spec: OutputSpec, info: ImageInfo, limits: ImageLimits, marks: Mapping[str, Image.Image]) -> _Task:
    p = plan(info.oriented_size, spec, limits.max_output_dimension)
    mark = overlay(marks[spec.watermark.image], spec.watermark, p.canvas) if spec.watermark is not None else None
    target = Target(p, choose_format(spec.format, info), spec.background, mark)
    return _Task(spec.name, spec.quality, spec.gravity == "smart" and spec.fit == "cover", target)


def _aim(task: _Task, thumb: Image.Image) -> _Task:
    if not task.smart:
        return task
    return replace(task, target=replace(task.target, plan=smart_crop(task.target.plan, thumb)))


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
               stats: dict[str, float]) -> tuple[list[Output], Image.Image]:
    """Every frame through the same steps for animated outputs (keeping timing and loop); stills use frame 1.

    Frames are decoded one at a time and only their outputs are kept, so
    memory follows the output size, not the input's.  Returns the outputs and
    the first frame's thumbnail.
    """
    n_frames = frame_count(image, limits.max_frames)
    made: dict[str, list[Image.Image]] = {t.name: [] for t in tasks if t.target.format.animation}
    durations: list[int] = []
    loop = int(image.info.get("loop", 0) or 0)
    first: Image.Image | None = None
    thumb: Image.Image | None = None
    for frame in frames(image, n_frames):
        duration = frame.info.get("duration")
        durations.append(int(duration) if duration is not None else 100)
        picture = _picture(frame, info)
        if first is None:
            first, thumb = picture, thumbnail(picture)
            tasks = [_aim(t, thumb) for t in tasks]
        for task in tasks:
            if task.name in made:
                made[task.name].append(_output(picture, task.target))
    assert first is not None and thumb is not None
    outputs = []
    for task in tasks:
        if task.name not in made:
            outputs.append(_encode_still(_output(first, task.target), task, stats))
            continue
        started = time.perf_counter()
        data = encode_animation(made[task.name], durations, loop, task.target.format, task.quality)
        stats["encode"] = stats.get("encode", 0.0) + time.perf_counter() - started
        width, height = made[task.name][0].size
        outputs.append(Output(task.name, data, width, height, task.target.format))
    return outputs, thumb
