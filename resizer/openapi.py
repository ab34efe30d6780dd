"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests.

Nothing here is maintained by hand: the request schemas come from
``options.models`` (with the configured limits), the error codes from
``errors``, and the form/query parameters are derived from the options model.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from . import __version__, errors
from .jobs import MAX_WAIT
from .options import JSON_FIELDS, MAX_QUERY_VALUE, Limits, models

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
        + [(m, "serialization") for m in (ErrorResponse, Accepted, JobStatus, Health, Readiness, NotReady)],
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

    def error(description: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}

    submit_errors = {
        "400": error(_codes(errors.InvalidJSON, errors.MissingImage, errors.InvalidBase64, errors.InvalidRequest)),
        "401": error(_codes(errors.Unauthorized)),
        "413": error(_codes(errors.PayloadTooLarge, errors.ImageTooLarge)),
        "414": error(_codes(errors.UriTooLong) + " (query string over 8 KB)"),
        "415": error(_codes(errors.UnsupportedMediaType, errors.UnsupportedImageFormat)),
        "422": error(_codes(errors.InvalidParameter, errors.CorruptImage, errors.IdempotencyConflict)),
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
                            "description": "Accepted: the job is queued.",
                            "headers": {"Location": {"schema": {"type": "string"},
                                                     "description": "The status URL."}},
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="Accepted")}}},
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
                        {"name": "wait", "in": "query", "required": False,
                         "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT},
                         "description": "Long poll: wait up to this many seconds for the job to end before answering."},
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
