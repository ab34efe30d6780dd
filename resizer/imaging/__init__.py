"""The image kernel: pure functions over bytes and plain data; no Redis, S3 or Flask in this package.

Public interface:

- ``process(data, job, limits, stats=None, *, watermarks=None) -> Result``:
  decode ``data`` once and make every output of ``job`` (a ``JobSpec``),
  drawing the named watermarks (``watermarks``: name -> the image's bytes).
  ``Result`` has ``outputs`` (``Output``: name, data, width, height, format),
  ``source`` (``Source``: width, height as displayed, format, bytes) and
  ``placeholder`` (``Placeholder``: blurhash, color).  Raises a
  ``resizer.errors.ResizerError`` (``corrupt_image``, ``image_too_large``,
  ``unsupported_image_format``, ``missing_image``, ``invalid_parameter`` for a
  watermark that is not given) for anything wrong with the input; any other
  exception is a bug.
- ``open_image(data, max_pixels) -> (PIL image, ImageInfo)``: the header-only
  probe the API runs on an upload (format allowlist, pixel limit); decodes no
  pixels.
- ``inspect_watermark(data, WatermarkLimits) -> (width, height)``: the full
  check of a watermark upload (PNG/WebP, still, bytes and pixel limits, decodes).
- ``JobSpec``/``OutputSpec``/``WatermarkSpec`` and the option lists ``FITS``,
  ``GRAVITIES``, ``ANCHORS``, ``FORMATS`` (``spec``): what the kernel is asked to make.
- ``three_eighths_works()``: the start-up check of the fast JPEG decode;
  call it once when a worker starts (it is otherwise run by the first job).
"""

from .formats import INPUT_FORMATS, OUTPUT_FORMATS, ImageInfo, open_image
from .pipeline import ImageLimits, Output, Result, Source, process
from .placeholder import Placeholder
from .shrink import three_eighths_works
from .spec import ANCHORS, FITS, FORMATS, GRAVITIES, JobSpec, OutputSpec, WatermarkSpec
from .watermark import WatermarkLimits, inspect_watermark

__all__ = ["ANCHORS", "FITS", "FORMATS", "GRAVITIES", "INPUT_FORMATS", "OUTPUT_FORMATS", "ImageInfo", "ImageLimits",
           "JobSpec", "Output", "OutputSpec", "Placeholder", "Result", "Source", "WatermarkLimits", "WatermarkSpec",
           "inspect_watermark", "open_image", "process", "three_eighths_works"]
