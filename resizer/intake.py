"""Request body -> (image bytes, raw options), then a header-only look at the image.

Three ways in, as the contract says: JSON with base64 ``imageData`` (a
``data:image/...;base64,`` prefix is accepted), ``multipart/form-data`` with an
``image`` file field, or a raw ``image/*`` body with options in the query
string.  The body size limit is enforced by Werkzeug from Content-Length before
the body is read (``MAX_CONTENT_LENGTH``).
"""

from __future__ import annotations

import binascii
import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pybase64
from flask import Request

from .errors import InvalidBase64, InvalidJSON, InvalidParameter, MissingImage, UnsupportedMediaType
from .imaging import open_image
from .options import MAX_QUERY_VALUE

_DATA_URI = re.compile(r"^data:[\w.+/-]*;base64,", re.IGNORECASE)
_DATA_URI_BYTES = re.compile(_DATA_URI.pattern.encode(), re.IGNORECASE)
_IMAGE_KEY = re.compile(rb'"imageData"\s*:\s*"')
WAIT = "wait"  # the query parameter a POST (and a status request) waits for the job's end with
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
         "AVIF": "image/avif", "TIFF": "image/tiff", "BMP": "image/bmp", "HEIF": "image/heic"}


@dataclass(frozen=True)
class Upload:
    data: bytes
    options: dict[str, Any]


def read_body(request: Request) -> bytes:
    """The whole request body, read in as few calls as the server allows.

    Werkzeug's ``get_data()`` reads 64 KiB at a time, and gunicorn's body reader copies what it read ahead on every
    such call: a 2.4 MB upload took ~10 ms to read that way. One ``read()`` of the declared length lets the server
    ``recv()`` it in MiB steps. Without a Content-Length (chunked), ``get_data()`` does it (Werkzeug then limits
    the length).
    """
    length = request.content_length
    if not length:
        return request.get_data(cache=False)
    request.stream  # noqa: B018 -- Werkzeug checks MAX_CONTENT_LENGTH here (413) before anything is read
    direct = _read_from_gunicorn(request.environ, length)
    if direct is not None:
        return direct
    # The server's own reader, not Werkzeug's LimitedStream around it: that one reads into a fresh buffer and
    # copies out of it again (two more copies of the upload, ~1.5 ms for 2.8 MB). The server's reader stops at
    # the Content-Length by itself.
    source = request.environ["wsgi.input"]
    parts = []
    while length > 0:
        part = source.read(length)
        if not part:
            break  # ended early: what came is checked like any other body (as get_data() would return it)
        parts.append(part)
        length -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_from_gunicorn(environ: dict, length: int) -> bytes | None:
    """The body straight from gunicorn's socket into the bytes it ends up in; None where that is not possible.

    gunicorn's reader receives into a fresh 1 MiB object per recv(), appends it to a buffer and copies the
    result out again: 9.7 ms of CPU for a 2.4 MB upload, most of it page faults on new memory. Receiving
    into one buffer that becomes the bytes object (a BytesIO over zeroed memory, which hands its buffer out
    without a copy) takes 1.3 ms. This uses gunicorn's reader objects (checked here, pinned in requirements):
    what its parser read ahead comes first, anything past the body (a pipelined request) goes back, and the
    reader is told the body is consumed, so the connection stays usable for the next request.
    """
    sock = environ.get("gunicorn.socket")
    body = environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    unreader = getattr(reader, "unreader", None)
    if (sock is None or type(reader).__name__ != "LengthReader" or getattr(reader, "length", None) != length
            or not hasattr(unreader, "take_buffered") or not hasattr(unreader, "unread")
            or not isinstance(getattr(body, "buf", None), io.BytesIO) or body.buf.getvalue()):
        return None
    ahead = unreader.take_buffered()
    try:
        if len(ahead) > length:
            unreader.unread(ahead[length:])
            ahead = ahead[:length]
        buffer = io.BytesIO(bytes(length))  # zeroed pages, mapped on first write; the BytesIO owns the only reference
        received = len(ahead)
        with buffer.getbuffer() as view:
            view[:received] = ahead
            while received < length:
                got = sock.recv_into(view[received:])
                if not got:
                    break  # the client stopped sending: what came is checked like any other body
                received += got
    except BaseException:
        body.failed = True  # where the next request starts is unknown: gunicorn closes the connection
        raise
    finally:
        reader.length = 0
    data = buffer.getvalue()
    return data if received == length else data[:received]


def read_upload(request: Request) -> Upload:
    """Options may come in the query string with any upload mode; ones in the body win."""
    mimetype = request.mimetype or ""
    if mimetype == "application/json" or mimetype.endswith("+json"):
        upload = _from_json(request)
    elif mimetype == "multipart/form-data":
        upload = _from_form(request)
    elif mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data = read_body(request)
        if not data:
            raise MissingImage("The request body is empty; send the image bytes as the body.")
        upload = Upload(data, {})
    else:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'} is not accepted; send application/json, "
            "multipart/form-data or an image/* body."
        )
    query = request.args.to_dict()
    query.pop(WAIT, None)  # how long the request waits for its job, not an option of the job
    for name, value in query.items():
        if len(value) > MAX_QUERY_VALUE or not value.isascii():
            raise InvalidParameter(f"Invalid parameter '{name}': query-string values must be ASCII and at most "
                                   f"{MAX_QUERY_VALUE} characters; send longer ones in the request body.")
    return Upload(upload.data, {**query, **upload.options})


def inspect(data: bytes, max_pixels: int) -> str:
    """Sniff the header (format allowlist, pixel limit, sane size) without decoding pixels; the MIME type."""
    image, info = open_image(data, max_pixels)
    image.close()
    return _MIME[info.format]


def _from_json(request: Request) -> Upload:
    # Parse without Flask's caches: a 40 MB body would otherwise stay in memory
    # three times over (raw bytes, parsed JSON, decoded image) until the request ends.
    raw = read_body(request)
    common = _common_json_upload(raw)
    if common is not None:
        return common
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise InvalidJSON("The request body is not valid JSON.") from None
    del raw
    if not isinstance(body, dict):
        raise InvalidJSON("The JSON body must be an object like {\"imageData\": \"<base64>\"}.")
    encoded = body.pop("imageData", None)
    if encoded is None or encoded == "":
        raise MissingImage("No image was sent: put the base64-encoded image in 'imageData'.")
    if not isinstance(encoded, str):
        raise InvalidParameter("Invalid parameter 'imageData': it must be a base64 string.")
    return Upload(decode_base64(encoded), body)


def _common_json_upload(raw: bytes) -> Upload | None:
    """The usual JSON upload, plain base64 in ``imageData``, without reading the image as JSON text.

    The JSON parser scans every character of the image's string and builds a str of it, which is then
    encoded back to bytes for the base64 decoder: 5.5 ms of CPU for a 2.8 MB image. Here the string's
    bytes are decoded where they lie and only the rest of the body goes to the parser, with a marker in
    the image's place. Anything else (escapes, line breaks, the URL-safe alphabet, a second imageData,
    invalid JSON) gets None, and the full parse answers it exactly as before.
    """
    key = _IMAGE_KEY.search(raw)
    if key is None or raw[key.start() - 1:key.start()] == b"\\":
        return None
    start = key.end()
    end = raw.find(b'"', start)
    if end < 0:
        return None
    # Stands in for the image; the parse must give it back as the top-level imageData. Random per request, so a
    # body cannot contain it.
    marker = uuid.uuid4().hex
    try:
        body = json.loads(raw[:start] + marker.encode() + raw[end:])  # ... "imageData": "<marker>" ...
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("imageData") != marker:
        return None  # not the key that counts: a nested one, or a later imageData overrides it
    del body["imageData"]
    text = memoryview(raw)[start:end]
    prefix = _DATA_URI_BYTES.match(text)
    try:
        data = pybase64.b64decode(text[prefix.end():] if prefix else text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Upload(data, body) if data else None


def _from_form(request: Request) -> Upload:
    file = request.files.get("image")
    if file is None:
        raise MissingImage("No image was sent: put the file in the form field 'image'.")
    data = file.read()
    if not data:
        raise MissingImage("The 'image' form field is empty.")
    options = request.form.to_dict()
    return Upload(data, options)


def decode_base64(text: str) -> bytes:
    text = _DATA_URI.sub("", text, count=1)
    try:
        data = pybase64.b64decode(text, validate=True)  # SIMD: 0.2 ms for a 3 MB image, base64 takes 8
    except (binascii.Error, ValueError):
        data = None
    if data is not None:
        if not data:  # e.g. a data URI with nothing after the comma
            raise MissingImage("'imageData' decodes to nothing.")
        return data
    # Be lenient with what real clients send: line breaks (MIME base64), the
    # URL-safe alphabet and missing padding.  Anything else is refused.
    cleaned = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        data = pybase64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64("'imageData' is not valid base64.") from None
    if not data:
        raise MissingImage("'imageData' decodes to nothing.")
    return data
