"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests.

Nothing here is maintained by hand: the request schemas come from
``options.models`` (with the configured limits), the error codes from
``errors``, the value lists (gravity, formats, watermark anchors) from
``imaging.spec`` through them, and the form/query parameters are derived from
the options model.  Responses are described by the small models below.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from . import __version__, errors
from .jobs import MAX_WAIT
from .options import JSON_FIELDS, MAX_QUERY_VALUE, NAME_PATTERN, Limits, models

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case code a program can switch on.")
    message: str = Field(description="One sentence a person can act on.")


class ErrorResponse(BaseModel):
    success: Literal[False]
    error: ErrorDetail


class Accepted(BaseModel):
    success: Literal[True]
    token: str = Field(description="Random UUID4 identifying the job.")
    status_url: str


class VariantResult(BaseModel):
    url: str = Field(description="Presigned URL of this output.")
    width: int
    height: int
    format: str
    bytes: int


class Source(BaseModel):
    """The upload as displayed (after EXIF orientation)."""

    width: int
    height: int
    format: str = Field(description="The upload's format, e.g. jpeg, png, webp, gif.")
    bytes: int


class Placeholder(BaseModel):
    """What a client paints while the real image loads."""

    blurhash: str = Field(description="BlurHash (4x3 components) of the displayed image.")
    color: str = Field(pattern=r"^#[0-9a-f]{6}$", description="Its average colour, #rrggbb.")


class JobStatus(BaseModel):
    success: Literal[True]
    token: str
    status: Literal["PENDING", "IN_PROGRESS", "SUCCESS", "FAILURE"]
    resized_image_url: str | None = Field(description="Presigned URL of the first output; null until SUCCESS.")
    expires_at: str | None = Field(None, description="When the presigned URLs stop working (ISO 8601 UTC).")
    variants: dict[str, VariantResult] | None = None
    error: ErrorDetail | None = Field(None, description="Why the job failed; only on FAILURE.")
    created_at: str | None = None
    finished_at: str | None = None
    source: Source | None = Field(None, description="Only on SUCCESS: what the upload was.")
    placeholder: Placeholder | None = Field(None, description="Only on SUCCESS: paint this while the "
                                                                  "image loads.")
    reused: bool | None = Field(None, description="On SUCCESS: true when the same bytes with the same options "
                                                  "under the same key were already done, and their outputs "
                                                  "are returned without processing again.")


class Ended(JobStatus):
    """A POST with ``?wait=`` whose job ended meanwhile: the status, and where to read it again."""

    status: Literal["SUCCESS", "FAILURE"]
    status_url: str


class WatermarkInfo(BaseModel):
    """A stored watermark (the submit option that uses one is ``Watermark``)."""

    name: str = Field(pattern=NAME_PATTERN)
    width: int
    height: int
    bytes: int


class WatermarkStored(BaseModel):
    success: Literal[True]
    watermark: WatermarkInfo


class WatermarkList(BaseModel):
    success: Literal[True]
    watermarks: list[WatermarkInfo] = Field(description="This API key's watermarks, sorted by name.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


class NotReady(ErrorResponse):
    checks: dict[str, str]


def _codes(*classes: type[errors.ResizerError]) -> str:
    return ", ".join(f"`{c.code}`" for c in classes)


@functools.lru_cache(maxsize=4)
def build(limits: Limits) -> dict[str, Any]:
    variant, options, request = models(limits)
    _, schemas = models_json_schema(
        [(m, "validation") for m in (request, options, variant)]
        + [(m, "serialization") for m in (ErrorResponse, Accepted, JobStatus, Ended, WatermarkStored, WatermarkList,
                                          Health, Readiness, NotReady)],
        ref_template=REF,
    )
    components = schemas["$defs"]
    option_props = components["ResizeOptions"]["properties"]

    def as_text_field(name: str, prop: dict) -> dict:
        if name in JSON_FIELDS:
            return {"type": "string", "description": f"The {name} option as JSON text."}
        return {k: v for k, v in prop.items() if k != "title"}

    def as_query_field(name: str, prop: dict) -> dict:
        field = as_text_field(name, prop)
        if name in (*JSON_FIELDS, "callback_url"):  # the only free-length options
            field = {**field, "maxLength": MAX_QUERY_VALUE, "pattern": "^[ -~]*$"} if "anyOf" not in field else {
                **field, "anyOf": [{**a, "maxLength": MAX_QUERY_VALUE} if a.get("type") == "string" else a
                                   for a in field["anyOf"]]}
        return field

    form_schema = {
        "type": "object",
        "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"},
                       **{n: as_text_field(n, p) for n, p in option_props.items()}},
        "additionalProperties": False,
    }
    query_params = [
        {"name": n, "in": "query", "required": False, "schema": as_query_field(n, p)} for n, p in option_props.items()
    ]

    location = {"Location": {"schema": {"type": "string"}, "description": "The status URL."}}

    def wait_param(description: str) -> dict:
        return {"name": "wait", "in": "query", "required": False,
                "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}, "description": description}

    def error(description: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}

    submit_errors = {
        "400": error(_codes(errors.InvalidJSON, errors.MissingImage, errors.InvalidBase64, errors.InvalidRequest)),
        "401": error(_codes(errors.Unauthorized)),
        "413": error(_codes(errors.PayloadTooLarge, errors.ImageTooLarge)),
        "414": error(_codes(errors.UriTooLong) + " (query string over 8 KB)"),
        "415": error(_codes(errors.UnsupportedMediaType, errors.UnsupportedImageFormat)),
        "422": error(_codes(errors.InvalidParameter, errors.CorruptImage, errors.IdempotencyConflict)
                     + " (`invalid_parameter` also for a watermark name this key has not stored)"),
        "429": error(_codes(errors.RateLimited)),
        "503": error(_codes(errors.ServiceUnavailable)),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Image resizer",
            "version": __version__,
            "description": "Submit an image, get a token at once; poll the token for the status and, "
                           "when done, presigned URLs of the resized outputs.",
        },
        "paths": {
            "/api/v1/resize": {
                "post": {
                    "operationId": "submitResize",
                    "security": [{}, {"apiKey": []}],
                    "summary": "Submit a resize job",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "required": False,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
                         "description": "Repeat a POST safely: the same key returns the same token."},
                        *query_params,
                        wait_param("Wait up to this many seconds for the job to end: if it does, the answer is 201 "
                                   "with its status (one request instead of a POST and a long poll); else 202 as "
                                   "without it, also at once when the server has no waiting slot free. Query "
                                   "string only, whatever the body."),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": REF.format(model="ResizeRequest")}},
                            "multipart/form-data": {"schema": form_schema},
                            "image/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted: the job is queued (with `?wait=`: it had not ended when the "
                                           "wait ran out, or the server had no waiting slot free).",
                            "headers": location,
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="Accepted")}}},
                        },
                        "201": {
                            "description": "With `?wait=`: the job ended while the request waited; its status, "
                                           "as `GET` on the status URL answers it.",
                            "headers": location,
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="Ended")}}},
                        },
                        **submit_errors,
                    },
                }
            },
            "/api/v1/resize/{token}": {
                "get": {
                    "operationId": "getResizeStatus",
                    "security": [{}, {"apiKey": []}],
                    "summary": "Job status and, when done, presigned URLs",
                    "parameters": [
                        {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                        wait_param("Long poll: wait up to this many seconds for the job to end before answering."),
                    ],
                    "responses": {
                        "200": {"description": "The job's status.",
                                "content": {"application/json": {"schema": {"$ref": REF.format(model="JobStatus")}}}},
                        "401": error(_codes(errors.Unauthorized)),
                        "404": error(_codes(errors.NotFound)),
                        "414": error(_codes(errors.UriTooLong)),
                        "422": error(_codes(errors.InvalidParameter)),
                        "429": error(_codes(errors.RateLimited)),
                        "503": error(_codes(errors.ServiceUnavailable)),
                    },
                }
            },
            **_watermark_paths(error),
            "/api/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": {
                "200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {
                    "type": "object"}}}}}}},
            "/docs": {"get": {"operationId": "docs", "summary": "Interactive API documentation", "responses": {
                "200": {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/": {"get": {"operationId": "uploadPage", "summary": "The upload page", "responses": {
                "200": {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (bearer METRICS_TOKEN when configured; off in production without one)",
                "responses": {
                    "200": {"description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": error(_codes(errors.Unauthorized)),
                    "404": error(_codes(errors.NotFound)),
                }}},
            "/healthz": {"get": {"operationId": "healthz", "summary": "The process is alive", "responses": {
                "200": {"description": "Alive.",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="Health")}}}}}}},
            "/readyz": {"get": {"operationId": "readyz", "summary": "Redis and storage are reachable", "responses": {
                "200": {"description": "Ready.",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="Readiness")}}}},
                "503": {"description": "Not ready; `checks` says which dependency is down.",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="NotReady")}}}}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "An API key, where the service has keys configured."}},
        },
    }


def _watermark_paths(error) -> dict[str, Any]:
    """PUT/GET/DELETE /api/v1/watermarks[/{name}]: named overlay images, per API key."""

    def ok(description: str, model: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_PATTERN},
            "description": "a-z, 0-9, _ and -, 1 to 32 characters; another API key's names are invisible."}
    common = {"401": error(_codes(errors.Unauthorized)), "429": error(_codes(errors.RateLimited)),
              "503": error(_codes(errors.ServiceUnavailable))}
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "/api/v1/watermarks": {"get": {
            "operationId": "listWatermarks",
            "security": [{}, {"apiKey": []}],
            "summary": "This API key's watermarks",
            "responses": {"200": ok("The watermarks, sorted by name.", "WatermarkList"),
                          "422": error(_codes(errors.CorruptImage) + " (a stored watermark cannot be read)"),
                          **common},
        }},
        "/api/v1/watermarks/{name}": {
            "put": {
                "operationId": "putWatermark",
                "security": [{}, {"apiKey": []}],
                "summary": "Store (or replace) a watermark image",
                "description": "The raw image is the body: a still PNG or WebP, its alpha honoured. A submit "
                               "then draws it with the `watermark` option.",
                "parameters": [name],
                "requestBody": {"required": True, "content": {"image/png": binary, "image/webp": binary}},
                "responses": {
                    "200": ok("Replaced the watermark of that name.", "WatermarkStored"),
                    "201": ok("Stored.", "WatermarkStored"),
                    "400": error(_codes(errors.MissingImage, errors.InvalidRequest)),
                    "413": error(_codes(errors.PayloadTooLarge, errors.ImageTooLarge)),
                    "415": error(_codes(errors.UnsupportedMediaType, errors.UnsupportedImageFormat)
                                 + " (not a still PNG or WebP)"),
                    "422": error(_codes(errors.InvalidParameter, errors.CorruptImage)),
                    **common,
                },
            },
            "delete": {
                "operationId": "deleteWatermark",
                "security": [{}, {"apiKey": []}],
                "summary": "Delete a watermark",
                "parameters": [name],
                "responses": {
                    "204": {"description": "Deleted."},
                    "404": error(_codes(errors.NotFound)),
                    "422": error(_codes(errors.InvalidParameter)),
                    **common,
                },
            },
        },
    }
