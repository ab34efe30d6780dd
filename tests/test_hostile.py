"""Hostile and broken input through the real service: bad corpus, fuzzed images, schema-driven API tests.

Every case must end in a 4xx at submit or a job that ends FAILURE with a
specific code: never a 5xx, never a hung job, never a dead worker.
"""

from __future__ import annotations

import random

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resizer.openapi import build as build_openapi
from resizer.options import Limits
from settings import Settings
from tests.conftest import BAD, CORPUS, b64, image_bytes, wait_until

pytestmark = pytest.mark.e2e

# What each bad corpus file must produce: (HTTP status at submit, job error code if accepted).
EXPECTED = {
    "broken.png": (422, "corrupt_image"),
    "crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": (202, "corrupt_image"),
    "crash-465703f71a0f0094873a3e0e82c9f798161171b8.sgi": (415, "unsupported_image_format"),
    "decompression_bomb.gif": (413, "image_too_large"),
    "empty.jpg": (400, "missing_image"),
    "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": (422, "corrupt_image"),
    "text.png": (415, "unsupported_image_format"),
    "timeout-060745d3f534ad6e4128c51d336ea5489182c69d.blp": (415, "unsupported_image_format"),
    "truncated_image.png": (202, "corrupt_image"),
    "truncated_jpeg.jpg": (202, "corrupt_image"),
    "zero_width.gif": (422, "corrupt_image"),
}


def workers_alive(stack) -> list[str]:
    return [name for name, p in stack.procs.items() if name.startswith("worker-") and p.alive()]


def restarts(stack) -> int:
    return sum(p.restarts for p in stack.procs.values())


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["json", "raw"])
def test_bad_corpus_is_refused_cleanly(api, stack, path, mode):
    before = restarts(stack)
    data = path.read_bytes()
    if mode == "json":
        r = api.post({"imageData": b64(data)} if data else {"imageData": ""})
    else:
        r = api.post(data=data, headers={"Content-Type": "image/" + (path.suffix[1:] or "png")})
    status, code = EXPECTED[path.name]
    assert r.status_code == status, r.text
    if status == 202:
        body = api.wait(r.json()["token"])
        assert body["status"] == "FAILURE" and body["error"]["code"] == code, body
        assert body["error"]["message"] and body["resized_image_url"] is None
    else:
        assert r.json()["error"]["code"] == code
    # no worker died, and the next good job succeeds
    assert len(workers_alive(stack)) == stack.workers and restarts(stack) == before
    assert api.wait(api.submit(image_bytes()))["status"] == "SUCCESS"


def test_corrupt_image_is_not_retried(api):
    data = (CORPUS / "bad" / "truncated_jpeg.jpg").read_bytes()
    token = api.submit(data)
    body = api.wait(token)
    assert body["error"]["code"] == "corrupt_image"
    from rq.job import Job

    from resizer.connections import make_redis
    from settings import Settings

    connection = make_redis(Settings.from_env(api.stack.env))
    # The status answers as soon as the job's end is published; RQ then files the attempt: as failed, or (were
    # it retried) as scheduled or queued again.
    status = wait_until(lambda: (s := Job.fetch(token, connection=connection).get_status()) != "started" and s,
                        "RQ to file the job's attempt")
    job = Job.fetch(token, connection=connection)
    assert status == "failed" and job.retries_left == 0
    assert len(list(job.results())) == 1  # one attempt only


def _mutate(data: bytes, rnd: random.Random, how: str) -> bytes:
    if how == "truncate":
        return data[: rnd.randrange(1, len(data))]
    if how == "flip":
        buf = bytearray(data)
        for _ in range(rnd.randrange(1, 20)):
            i = rnd.randrange(min(len(buf), 4096))  # the header region, where parsers are most fragile
            buf[i] ^= 1 << rnd.randrange(8)
        return bytes(buf)
    # splice: the head of one file onto the tail of another
    other = rnd.choice(SEEDS)
    return data[: rnd.randrange(1, len(data))] + other[rnd.randrange(len(other)):]


SEEDS = [(CORPUS / "good" / n).read_bytes() for n in
         ("hopper.jpg", "hopper.png", "hopper.gif", "hopper.webp", "hopper.tif", "hopper.bmp", "hopper.avif",
          "pil_sample_cmyk.jpg", "iss634.gif")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["truncate", "flip", "splice"]),
       source=st.integers(0, len(SEEDS) - 1), fmt=st.sampled_from(["jpeg", "png", "webp", "auto"]))
def test_fuzzed_images_never_cause_a_5xx_a_hang_or_a_dead_worker(api, stack, seed, how, source, fmt):
    before = restarts(stack)
    data = _mutate(SEEDS[source], random.Random(seed), how)
    r = api.post({"imageData": b64(data), "width": 50, "format": fmt})
    assert r.status_code < 500, r.text
    if r.status_code == 202:
        body = api.wait(r.json()["token"], deadline=30)
        assert body["status"] in ("SUCCESS", "FAILURE")
        if body["status"] == "FAILURE":
            assert body["error"]["code"] in ("corrupt_image", "image_too_large", "unsupported_image_format"), body
    else:
        assert r.json()["error"]["code"] in ("corrupt_image", "image_too_large", "unsupported_image_format",
                                              "missing_image"), r.text
    assert restarts(stack) == before and len(workers_alive(stack)) == stack.workers


# -- schema-driven: every operation of our own OpenAPI document ---------------------------------
# The document is built in-process (pytest collects before any server runs);
# test_served_document_is_the_generated_one checks the server serves the same.
schema = schemathesis.openapi.from_dict(build_openapi(Limits(Settings().max_output_dimension, Settings().max_variants)))


def test_served_document_is_the_generated_one(api):
    served = api.http.get(f"{api.base}/api/v1/openapi.json").json()
    assert served == schema.raw_schema


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, api):
    """No 5xx, and every response (status, content type, body) matches the document.

    The one check left out is "schema-valid data is accepted": a random string
    that fits ``imageData``'s schema is still not an image, and must be refused.
    """
    case.call_and_validate(base_url=api.base, excluded_checks=[schemathesis.checks.positive_data_acceptance])
