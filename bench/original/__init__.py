"""The design this service replaces, rebuilt as a benchmark baseline: Flask + Celery, base64 in the task message."""
