"""The image kernel: pure functions over bytes and plain data; no Redis, S3 or Flask in this package.

Public interface:

- ``process(data, job, limits, stats=None) -> list[Output]``: decode ``data``
  once and make every output of ``job`` (a ``JobSpec``).  Raises a
  ``resizer.errors.ResizerError`` (``corrupt_image``, ``image_too_large``,
  ``unsupported_image_format``, ``missing_image``) for anything wrong with
  the image; any other exception is a bug.
- ``open_image(data, max_pixels) -> (PIL image, ImageInfo)``: the header-only
  probe the API runs on an upload (format allowlist, pixel limit); decodes no
  pixels.
- ``JobSpec``/``OutputSpec`` and the option lists ``FITS``, ``GRAVITIES``,
  ``FORMATS`` (``spec``): what the kernel is asked to make.
- ``three_eighths_works()``: the start-up check of the fast JPEG decode;
  call it once when a worker starts (it is otherwise run by the first job).
"""

from .formats import INPUT_FORMATS, OUTPUT_FORMATS, ImageInfo, open_image
from .pipeline import ImageLimits, Output, process
from .shrink import three_eighths_works
from .spec import FITS, FORMATS, GRAVITIES, JobSpec, OutputSpec

__all__ = ["FITS", "FORMATS", "GRAVITIES", "INPUT_FORMATS", "OUTPUT_FORMATS", "ImageInfo", "ImageLimits", "JobSpec",
           "Output", "OutputSpec", "open_image", "process", "three_eighths_works"]
