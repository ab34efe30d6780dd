"""An asynchronous image-resizing service: Flask API, RQ workers, S3 storage."""

__version__ = "1.0.0"
