"""The v1.1 additions in the OpenAPI document: watermark endpoints, the status's new fields,
gravity smart and the watermark option; and real responses of the service validate against it."""

from __future__ import annotations

import copy
import io

import pytest
import schemathesis
from jsonschema_rs import Draft202012Validator  # schemathesis's own validator
from PIL import Image

from resizer.imaging.spec import ANCHORS, GRAVITIES
from resizer.openapi import build
from resizer.options import NAME_PATTERN, Limits
from tests.conftest import b64, image_bytes

DOC = build(Limits())
SCHEMAS = DOC["components"]["schemas"]


def resolve(schema: dict) -> dict:
    """The schema a $ref (or an optional field's anyOf [$ref, null]) points at."""
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    if "$ref" in schema:
        return SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def ref(content: dict) -> str:
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


def test_gravity_offers_smart_wherever_gravity_is():
    for model in ("ResizeOptions", "ResizeRequest", "Variant"):
        assert resolve(SCHEMAS[model]["properties"]["gravity"])["enum"] == list(GRAVITIES)
    assert "smart" in GRAVITIES


def test_watermark_option_is_an_object_on_submit_and_on_variants():
    for model in ("ResizeOptions", "Variant"):
        mark = resolve(SCHEMAS[model]["properties"]["watermark"])
        assert mark["required"] == ["image"] and mark["additionalProperties"] is False
        props = mark["properties"]
        assert set(props) == {"image", "gravity", "opacity", "scale", "margin"}
        assert props["image"]["pattern"] == NAME_PATTERN
        assert props["gravity"]["enum"] == list(ANCHORS) and props["gravity"]["default"] == "south_east"
        assert (props["opacity"]["minimum"], props["opacity"]["maximum"], props["opacity"]["default"]) == (0, 1, 0.5)
    form = DOC["paths"]["/api/v1/resize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["watermark"]["type"] == "string"  # JSON text in a form


def test_status_documents_source_placeholder_and_reused():
    props = SCHEMAS["JobStatus"]["properties"]
    source = resolve(props["source"])
    assert set(source["required"]) == {"width", "height", "format", "bytes"}
    placeholder = resolve(props["placeholder"])
    assert set(placeholder["required"]) == {"blurhash", "color"}
    assert placeholder["properties"]["color"]["pattern"] == "^#[0-9a-f]{6}$"
    assert {"type": "boolean"} in props["reused"]["anyOf"]


def test_watermark_endpoints_are_documented():
    collection = DOC["paths"]["/api/v1/watermarks"]
    assert set(collection) == {"get"}
    assert ref(collection["get"]["responses"]["200"]["content"]) == "WatermarkList"
    item = DOC["paths"]["/api/v1/watermarks/{name}"]
    assert set(item) == {"put", "delete"}
    put, delete = item["put"], item["delete"]
    assert put["parameters"][0]["schema"]["pattern"] == NAME_PATTERN
    body = put["requestBody"]["content"]
    assert set(body) == {"image/png", "image/webp"}
    assert all(c["schema"] == {"type": "string", "format": "binary"} for c in body.values())
    assert ref(put["responses"]["201"]["content"]) == ref(put["responses"]["200"]["content"]) == "WatermarkStored"
    for status, code in (("413", "payload_too_large"), ("415", "unsupported_image_format"),
                         ("422", "invalid_parameter"), ("422", "corrupt_image"), ("401", "unauthorized")):
        assert code in put["responses"][status]["description"]
    assert set(delete["responses"]) >= {"204", "404"} and "content" not in delete["responses"]["204"]
    info = SCHEMAS["WatermarkInfo"]
    assert set(info["required"]) == {"name", "width", "height", "bytes"}
    assert {o["operationId"] for o in (collection["get"], put, delete)} == {
        "listWatermarks", "putWatermark", "deleteWatermark"}


# -- real responses against the document ---------------------------------------------------------
def mark_png(size=(40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (0, 0, 0, 160)).save(buf, "PNG")
    return buf.getvalue()


def operation(path: str, method: str):
    return schemathesis.openapi.from_dict(DOC)[path][method]


@pytest.mark.e2e
def test_real_v11_responses_validate_against_the_document(api):
    """Watermark PUT (201, 200), GET, a watermarked smart-crop job's status, DELETE (204, 404) and an
    unknown name at submit (422): each response's status, content type and body match the document."""
    base, http = api.base, api.http
    put, listing = operation("/api/v1/watermarks/{name}", "PUT"), operation("/api/v1/watermarks", "GET")
    delete, status_op = operation("/api/v1/watermarks/{name}", "DELETE"), operation("/api/v1/resize/{token}", "GET")
    submit = operation("/api/v1/resize", "POST")
    name = "oas-v11"
    http.delete(f"{base}/api/v1/watermarks/{name}", timeout=10)  # the session's stack may be reused

    created = http.put(f"{base}/api/v1/watermarks/{name}", data=mark_png(), timeout=10,
                       headers={"Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    put.validate_response(created)
    replaced = http.put(f"{base}/api/v1/watermarks/{name}", data=mark_png((30, 30)), timeout=10,
                        headers={"Content-Type": "image/png"})
    assert replaced.status_code == 200 and replaced.json()["watermark"]["width"] == 30
    put.validate_response(replaced)
    listed = http.get(f"{base}/api/v1/watermarks", timeout=10)
    listing.validate_response(listed)
    assert name in [m["name"] for m in listed.json()["watermarks"]]

    r = api.post({"imageData": b64(image_bytes((160, 90))), "width": 64, "height": 64, "fit": "cover",
                  "gravity": "smart", "watermark": {"image": name, "opacity": 0.8, "scale": 0.3, "margin": 4}})
    assert r.status_code == 202, r.text
    submit.validate_response(r)
    api.wait(r.json()["token"])
    done = api.status(r.json()["token"])
    status_op.validate_response(done)
    body = done.json()
    assert body["status"] == "SUCCESS", body
    assert body["source"] == {"width": 160, "height": 90, "format": "jpeg", "bytes": body["source"]["bytes"]}
    assert body["placeholder"]["color"].startswith("#") and body["placeholder"]["blurhash"]
    assert body["reused"] is False

    ended = api.post({"imageData": b64(image_bytes((120, 80))), "width": 32}, params={"wait": 15})
    assert ended.status_code == 201, ended.text  # POST ?wait=: the job ended while it waited
    submit.validate_response(ended)

    unknown = api.post({"imageData": b64(image_bytes()), "watermark": {"image": "no-such-mark"}})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "invalid_parameter"
    submit.validate_response(unknown)

    gone = http.delete(f"{base}/api/v1/watermarks/{name}", timeout=10)
    assert gone.status_code == 204
    delete.validate_response(gone)
    missing = http.delete(f"{base}/api/v1/watermarks/{name}", timeout=10)
    assert missing.status_code == 404
    delete.validate_response(missing)

    # The document is strict about the new fields: a status that breaks them does not validate.
    job_status = Draft202012Validator({"$ref": "#/components/schemas/JobStatus", "components": DOC["components"]})
    assert job_status.is_valid(body)
    for breaks in (lambda b: b["placeholder"].update(color="red"), lambda b: b["source"].pop("width"),
                   lambda b: b.update(reused="no")):
        broken = copy.deepcopy(body)
        breaks(broken)
        assert not job_status.is_valid(broken), broken
