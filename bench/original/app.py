"""The original design's API: POST base64 JSON -> Celery task id as token; GET -> the task's state.

The contract's compatibility shape (docs: /work/shared/design/api-v1.md): POST /api/v1/resize
{"imageData": base64} -> 202 {"success": true, "token"}; GET /api/v1/resize/<token> ->
{"status": PENDING|IN_PROGRESS|SUCCESS|FAILURE, "resized_image_url"}; the output is served
from the local results folder.  Run as the original ran, on Flask's own server (``bench/original/serve.py``),
or under gunicorn: ``gunicorn bench.original.app:api``.
"""

from __future__ import annotations

import base64
import binascii

from flask import Flask, jsonify, request, send_from_directory, url_for

from bench.original.tasks import RESULTS_DIR, app as celery_app, resize_image

api = Flask(__name__)

# Celery's states as the original API reported them.
STATES = {"PENDING": "PENDING", "RECEIVED": "PENDING", "STARTED": "IN_PROGRESS", "RETRY": "IN_PROGRESS",
          "SUCCESS": "SUCCESS", "FAILURE": "FAILURE", "REVOKED": "FAILURE"}


@api.post("/api/v1/resize")
def submit():
    body = request.get_json(silent=True)
    data = body.get("imageData") if isinstance(body, dict) else None
    if not isinstance(data, str) or not data:
        return jsonify(success=False, error="imageData (base64) is required"), 400
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return jsonify(success=False, error="imageData is not valid base64"), 400
    task = resize_image.delay(data)
    return jsonify(success=True, token=task.id), 202


@api.get("/api/v1/resize/<token>")
def status(token: str):
    state = STATES.get(celery_app.AsyncResult(token).state, "PENDING")
    url = url_for("resized", filename=f"{token}.jpg", _external=True) if state == "SUCCESS" else None
    return jsonify(status=state, resized_image_url=url)


@api.get("/resized/<path:filename>")
def resized(filename: str):
    return send_from_directory(RESULTS_DIR, filename)
