"""Pure image processing: no Redis, S3 or Flask in this package."""

from .formats import INPUT_FORMATS, OUTPUT_FORMATS, ImageInfo, open_image
from .pipeline import ImageLimits, Output, process

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "ImageInfo", "ImageLimits", "Output", "open_image", "process"]
