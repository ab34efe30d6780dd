"""The one error family.

Every error a client can see is a ``ResizerError``: it carries its HTTP status,
a stable snake_case ``code`` a program can switch on, and a message a person
can act on.  The API has a single handler that writes them as
``{"success": false, "error": {"code": ..., "message": ...}}``; the worker
stores the same ``code``/``message`` pair on a failed job.

``permanent`` tells the worker whether running the job again could help:
a corrupt image stays corrupt, an unreachable storage server may come back.
"""

from __future__ import annotations


class ResizerError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "Something went wrong on our side; please try again later."
    permanent: bool = True
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        if message:
            self.message = message
        if headers:
            self.headers = dict(headers)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidJSON(ResizerError):
    status, code = 400, "invalid_json"
    message = "The request body is not valid JSON."


class MissingImage(ResizerError):
    status, code = 400, "missing_image"
    message = "No image was sent: put it in 'imageData' (JSON), the 'image' form field, or an image/* body."


class InvalidBase64(ResizerError):
    status, code = 400, "invalid_base64"
    message = "'imageData' is not valid base64."


class Unauthorized(ResizerError):
    status, code = 401, "unauthorized"
    message = "Send a valid API key as 'Authorization: Bearer <key>'."


class Forbidden(ResizerError):
    status, code = 403, "forbidden"
    message = "This API key may not do that."


class NotFound(ResizerError):
    status, code = 404, "not_found"
    message = "No such resource."


class MethodNotAllowed(ResizerError):
    status, code = 405, "method_not_allowed"
    message = "That HTTP method is not allowed here."


class UriTooLong(ResizerError):
    """Written by the HTTP server (gunicorn.conf.py) before the app sees the request."""

    status, code = 414, "uri_too_long"
    message = "The URL is too long; send options in the request body instead."


class InvalidRequest(ResizerError):
    """A request the HTTP server could not parse (malformed request line or headers)."""

    status, code = 400, "invalid_request"
    message = "The HTTP request is malformed."


class PayloadTooLarge(ResizerError):
    status, code = 413, "payload_too_large"
    message = "The request body is too large."


class ImageTooLarge(ResizerError):
    status, code = 413, "image_too_large"
    message = "The image has too many pixels."


class UnsupportedMediaType(ResizerError):
    status, code = 415, "unsupported_media_type"
    message = "Send application/json, multipart/form-data or an image/* body."


class UnsupportedImageFormat(ResizerError):
    status, code = 415, "unsupported_image_format"
    message = "This image format is not supported; send JPEG, PNG, GIF, WebP, AVIF, HEIC, TIFF or BMP."


class InvalidParameter(ResizerError):
    status, code = 422, "invalid_parameter"
    message = "A parameter is invalid."


class CorruptImage(ResizerError):
    status, code = 422, "corrupt_image"
    message = "The image data is corrupt or truncated and cannot be decoded."


class IdempotencyConflict(ResizerError):
    status, code = 422, "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request body."


class RateLimited(ResizerError):
    status, code = 429, "rate_limited"
    message = "Too many requests; retry after the time in the Retry-After header."


class ServiceUnavailable(ResizerError):
    status, code = 503, "service_unavailable"
    message = "The service is temporarily unavailable; retry after the time in the Retry-After header."
    permanent = False

    def __init__(self, message: str | None = None, *, retry_after: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(ServiceUnavailable):
    """Storage could not be reached; in the worker this is retried."""

    code = "storage_unavailable"
    message = "Object storage is unreachable; the job will be retried."


class ProcessingTimeout(ResizerError):
    status, code = 422, "processing_timeout"
    message = "The image took longer than the job time limit to process."


class WorkerLost(ResizerError):
    code = "worker_lost"
    message = "The worker processing this job stopped before finishing, on every attempt; submit it again."


class InternalError(ResizerError):
    pass
