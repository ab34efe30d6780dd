"""Watermarks: named overlay images an API key keeps, and the HTTP endpoints for them.

Each tenant (the owner an API key belongs to) has its own names:
``watermarks/<tenant>/<name>`` in storage holds the PNG or WebP as uploaded,
checked completely at upload (``imaging.inspect_watermark``: format, bytes,
pixels, decodable).  A submit that names a watermark is refused with 422 if the
tenant has none by that name; the worker reads the bytes when the job runs.
"""

from __future__ import annotations

import hashlib
import io
import re

from flask import Blueprint, Response, current_app, jsonify, request
from PIL import Image

from .errors import CorruptImage, InvalidParameter, NotFound, UnsupportedMediaType
from .imaging import JobSpec, WatermarkLimits, inspect_watermark
from .intake import read_body
from .security import tenant as current_tenant
from .storage import Storage

NAME = re.compile(r"[a-z0-9_-]{1,32}")
MAX_MARKS = 100  # per API key: a listing reads each mark's header
_TYPES = {"image/png", "image/webp"}

bp = Blueprint("watermarks", __name__)


def key(tenant: str, name: str) -> str:
    return f"watermarks/{tenant}/{name}"


def check_names(storage: Storage, tenant: str, spec: JobSpec) -> dict[str, str]:
    """422 for a watermark the tenant does not have (checked once, at submit).

    Returns each mark's version (a hash of its bytes), so identical work is not
    reused across a replaced watermark (sizes, times and ETags cannot tell: a
    replacement may have the same size within the same second, and some
    servers give no ETag).
    """
    versions = {}
    for name in sorted(spec.watermark_names()):
        data = storage.get(key(tenant, name))
        if data is None:
            raise InvalidParameter(f"Invalid parameter 'watermark': there is no watermark named '{name}' for this "
                                   "API key; upload it with PUT /api/v1/watermarks/<name>.")
        versions[name] = hashlib.sha256(data).hexdigest()
    return versions


def fetch(storage: Storage, tenant: str, spec: JobSpec) -> dict[str, bytes]:
    """The bytes of every watermark the job draws (worker side)."""
    marks = {}
    for name in spec.watermark_names():
        data = storage.get(key(tenant, name))
        if data is None:
            raise InvalidParameter(f"Invalid parameter 'watermark': the watermark '{name}' was deleted before the "
                                   "job ran; upload it again and resubmit.")
        marks[name] = data
    return marks


def _storage() -> Storage:
    return current_app.extensions["resizer"].storage


def _name(raw: str) -> str:
    if not NAME.fullmatch(raw):
        raise InvalidParameter("Invalid parameter 'name': a watermark name is 1 to 32 of a-z 0-9 _ -.")
    return raw


def _describe(name: str, data: bytes) -> dict:
    try:
        with Image.open(io.BytesIO(data)) as image:  # header only: it was checked completely at upload
            width, height = image.size
    except (OSError, ValueError):
        raise CorruptImage(f"The stored watermark '{name}' cannot be read; upload it again.") from None
    return {"name": name, "width": width, "height": height, "bytes": len(data)}


@bp.put("/api/v1/watermarks/<name>")
def put(name: str) -> tuple[Response, int]:
    name = _name(name)
    if (request.mimetype or "") not in _TYPES:
        raise UnsupportedMediaType("Send the watermark as the raw body with Content-Type image/png or image/webp.")
    data = read_body(request)
    settings = current_app.extensions["resizer"].settings
    width, height = inspect_watermark(data, WatermarkLimits(settings.watermark_max_bytes,
                                                            settings.watermark_max_pixels))
    tenant = current_tenant()
    storage, stored_key = _storage(), key(tenant, name)
    replaced = storage.head(stored_key) is not None
    if not replaced and sum(1 for _ in storage.list(key(tenant, ""))) >= MAX_MARKS:
        raise InvalidParameter(f"This API key has {MAX_MARKS} watermarks already, the most it may keep; "
                               "delete one first.")
    storage.put(stored_key, data, request.mimetype)
    body = {"name": name, "width": width, "height": height, "bytes": len(data)}
    return jsonify(success=True, watermark=body), 200 if replaced else 201


@bp.get("/api/v1/watermarks")
def list_() -> Response:
    storage, prefix = _storage(), key(current_tenant(), "")
    marks = []
    for stored_key, _modified in storage.list(prefix):
        name = stored_key[len(prefix):]
        data = storage.get_head_bytes(stored_key, 64 * 1024)  # enough for the header of a PNG or WebP
        head = storage.head(stored_key)
        if NAME.fullmatch(name) and data and head is not None:
            marks.append(_describe(name, data) | {"bytes": head["bytes"]})
    return jsonify(success=True, watermarks=sorted(marks, key=lambda m: m["name"]))


@bp.delete("/api/v1/watermarks/<name>")
def delete(name: str) -> tuple[str, int]:
    name = _name(name)
    storage, stored_key = _storage(), key(current_tenant(), name)
    if storage.head(stored_key) is None:
        raise NotFound(f"There is no watermark named '{name}' for this API key.")
    storage.delete(stored_key)
    return "", 204
