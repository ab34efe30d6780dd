"""Resize options: parsed and validated once, at the edge, into one frozen object.

The pydantic models below are the single source of truth for what a client may
send: the API validates requests with them and the OpenAPI document is
generated from them, so the docs cannot drift from the code.  Validation turns
them, once, into a ``JobSpec`` (``resizer.imaging.spec``: plain frozen
dataclasses with every default resolved), which is all the worker and the
kernel ever see.  ``JobSpec`` and the option lists are re-exported here for the
edge's callers.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InvalidParameter
from .imaging.spec import ANCHORS, FITS, FORMATS, GRAVITIES, JobSpec, OutputSpec, WatermarkSpec

__all__ = ["FITS", "FORMATS", "GRAVITIES", "JSON_FIELDS", "NAME_PATTERN", "JobSpec", "Limits", "OutputSpec", "models",
           "parse_options"]

DEFAULT_SIZE = 100  # the original API's 100x100 output
DEFAULT_NAME = "default"
NAME_PATTERN = r"^[a-z0-9_-]{1,32}$"  # variant and watermark names
MAX_QUERY_VALUE = 1024  # characters per option in a query string: URLs stay well under the server's 8 KB

# pydantic wants Literal types; they are built from the kernel's lists so the two cannot differ.
Fit = Literal[FITS]  # type: ignore[valid-type]
Gravity = Literal[GRAVITIES]  # type: ignore[valid-type]
Format = Literal[FORMATS]  # type: ignore[valid-type]
Anchor = Literal[ANCHORS]  # type: ignore[valid-type]
JSON_FIELDS = ("variants", "watermark")  # objects that forms and query strings carry as JSON text


@dataclass(frozen=True)
class Limits:
    max_output_dimension: int = 8192
    max_variants: int = 10


@functools.lru_cache(maxsize=8)
def models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """Build the request models for the configured limits: (Variant, ResizeOptions, ResizeRequest)."""
    dim = Annotated[
        int, Field(ge=1, le=limits.max_output_dimension, description="Pixels; 1..MAX_OUTPUT_DIMENSION.")
    ]

    class Watermark(BaseModel):
        """An overlay image drawn on the output after the resize."""

        model_config = ConfigDict(extra="forbid", frozen=True, title="Watermark")
        image: Annotated[str, Field(pattern=NAME_PATTERN, description="Name of a watermark stored with "
                                                                      "PUT /api/v1/watermarks/{name}.")]
        gravity: Anchor = Field("south_east", description="Where it sits on the output.")
        opacity: Annotated[float, Field(ge=0, le=1)] = Field(0.5, description="0 (invisible) .. 1 (its own alpha).")
        scale: Annotated[float, Field(gt=0, le=1)] | None = Field(
            None, description="Its width as a fraction of the output's width (aspect kept); default its own size, "
                              "never larger than the output.")
        margin: Annotated[int, Field(ge=0, le=limits.max_output_dimension)] = Field(
            0, description="Pixels in from the edges it is placed against.")

    class Variant(BaseModel):
        """One named output made from the same upload."""

        model_config = ConfigDict(extra="forbid", frozen=True, title="Variant")
        name: Annotated[str, Field(pattern=NAME_PATTERN, description="Unique name of this output.")]
        width: dim | None = None
        height: dim | None = None
        fit: Fit | None = None
        gravity: Gravity | None = None
        enlarge: bool | None = None
        format: Format | None = None
        quality: Annotated[int, Field(ge=1, le=100)] | None = None
        watermark: Watermark | None = None

    class ResizeOptions(BaseModel):
        """Options of a resize job; all optional. Top-level values are the defaults of every variant."""

        model_config = ConfigDict(extra="forbid", frozen=True, title="ResizeOptions")
        width: dim | None = Field(None, description="Output width; default 100 when width and height are absent.")
        height: dim | None = Field(None, description="Output height; default 100 when width and height are absent.")
        fit: Fit | None = Field(None, description="fill when no size is given, else contain.")
        gravity: Gravity | None = Field(None, description="Which part 'cover' keeps ('smart': the most interesting "
                                                          "part) and where 'pad' puts the image; default center.")
        enlarge: bool | None = Field(None, description="Allow output larger than input; default true only with no size.")
        format: Format | None = Field(None, description="Output format; default jpeg.")
        quality: Annotated[int, Field(ge=1, le=100)] | None = Field(None, description="Encoder quality.")
        background: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = Field(
            None, description="#rrggbb fill for 'pad' and for alpha flattened into JPEG; default #ffffff."
        )
        watermark: Watermark | None = Field(
            None, description="Overlay drawn on every output (a variant may set its own); JSON text in forms and "
                              "query strings.")
        variants: Annotated[list[Variant], Field(min_length=1, max_length=limits.max_variants)] | None = Field(
            None, description="Several named outputs from one upload."
        )
        callback_url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[!-~]+$")] | None = Field(
            None, description="POSTed the status JSON, signed, when the job ends (public hosts only; ASCII, "
                              "percent-encoded)."
        )

        @model_validator(mode="after")
        def _unique_variant_names(self):
            names = [v.name for v in self.variants or ()]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
            return self

    class ResizeRequest(ResizeOptions):
        """JSON body of POST /api/v1/resize."""

        model_config = ConfigDict(extra="forbid", frozen=True, title="ResizeRequest")
        imageData: str = Field(description="The image, base64 (a data:image/...;base64, prefix is accepted).")

    return Variant, ResizeOptions, ResizeRequest


def parse_options(raw: dict[str, Any], limits: Limits) -> JobSpec:
    """Validate client options (JSON values, or strings from a form/query) into a JobSpec."""
    raw = dict(raw)
    for field in JSON_FIELDS:
        if isinstance(raw.get(field), str):
            try:
                raw[field] = json.loads(raw[field])
            except ValueError:
                raise InvalidParameter(f"Invalid parameter '{field}': it must be JSON text.") from None
    _, options_model, _ = models(limits)
    try:
        options = options_model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidParameter(_describe(exc)) from None
    return _resolve(options)


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "extra_forbidden":
        return f"Unknown parameter '{where}'; see /api/v1/openapi.json for the accepted ones."
    if err["type"] == "literal_error":
        return f"Invalid parameter '{where}': {err['msg'].replace('Input should be', 'it must be')}."
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"Invalid parameter '{where}': {msg[0].lower() + msg[1:]}."


def _resolve(options: BaseModel) -> JobSpec:
    background = _hex_to_rgb(options.background or "#ffffff")
    variants = options.variants or [None]
    outputs = []
    for variant in variants:

        def pick(field: str):
            value = getattr(variant, field, None) if variant is not None else None
            return getattr(options, field) if value is None else value

        width, height = pick("width"), pick("height")
        sized = width is not None or height is not None
        if not sized:
            width = height = DEFAULT_SIZE
        fit, enlarge, watermark = pick("fit"), pick("enlarge"), pick("watermark")
        outputs.append(
            OutputSpec(
                name=variant.name if variant is not None else DEFAULT_NAME,
                width=width,
                height=height,
                fit=fit if fit is not None else ("contain" if sized else "fill"),
                gravity=pick("gravity") or "center",
                enlarge=enlarge if enlarge is not None else not sized,
                format=pick("format") or "jpeg",
                quality=pick("quality"),
                background=background,
                watermark=WatermarkSpec(**watermark.model_dump()) if watermark is not None else None,
            )
        )
    return JobSpec(tuple(outputs), options.callback_url)


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
