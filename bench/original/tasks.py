"""The original design's worker: one Celery task that gets the whole image as base64 in its message.

Faithful, not tuned: the task decodes the full image, resizes it to 100x100 (stretched) with
LANCZOS, saves a quality-100 JPEG to a local folder and returns its path; Celery's Redis result
backend holds the state (PENDING, STARTED, SUCCESS, FAILURE) that the API reports.

Run: ``celery -A bench.original.tasks worker --pool prefork --concurrency 2`` with
ORIGINAL_REDIS_URL (broker and result backend) and ORIGINAL_RESULTS_DIR set.
"""

from __future__ import annotations

import base64
import io
import os

from celery import Celery
from PIL import Image

REDIS_URL = os.environ.get("ORIGINAL_REDIS_URL", "redis://127.0.0.1:6379/1")
RESULTS_DIR = os.environ.get("ORIGINAL_RESULTS_DIR", "/tmp/original-results")

app = Celery("original", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_track_started = True  # so a running job reads STARTED (the API's IN_PROGRESS), not PENDING


@app.task(name="resize_image")
def resize_image(image_b64: str) -> str:
    image = Image.open(io.BytesIO(base64.b64decode(image_b64)))
    resized = image.resize((100, 100), Image.Resampling.LANCZOS)
    if resized.mode != "RGB":
        resized = resized.convert("RGB")
    path = os.path.join(RESULTS_DIR, f"{resize_image.request.id}.jpg")
    resized.save(path, "JPEG", quality=100)
    return path
