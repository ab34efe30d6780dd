"""The v1.1 additions end to end: watermarks, what the upload was and its placeholder, reuse of identical work.

One stack with two API keys (two owners) and a real S3 server; every check reads
what a client reads: HTTP answers and the downloaded pixels.
"""

from __future__ import annotations

import io
import re
import threading
from urllib.parse import urlparse

import blurhash
import pytest
import requests
from PIL import Image

from bench.images import photo
from resizer.connections import make_redis
from resizer.metrics import stage_count
from resizer.security import hash_key
from settings import Settings
from tests.conftest import b64, start_stack

pytestmark = pytest.mark.e2e
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    keys = ",".join(f"{owner}:{hash_key(key)}" for owner, key in KEYS.items())
    stack = start_stack(tmp_path_factory.mktemp("v11"), workers=2, API_KEYS=keys, WATERMARK_MAX_BYTES=200_000)
    stack.run_supervisor()
    yield stack
    stack.stop()


class Client:
    def __init__(self, stack, owner: str):
        self.base = f"http://127.0.0.1:{stack.port}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {KEYS[owner]}"

    def put_mark(self, name: str, data: bytes, content_type: str = "image/png") -> requests.Response:
        return self.http.put(f"{self.base}/api/v1/watermarks/{name}", data=data,
                             headers={"Content-Type": content_type}, timeout=30)

    def marks(self) -> list[dict]:
        r = self.http.get(f"{self.base}/api/v1/watermarks", timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["watermarks"]

    def submit(self, image: bytes, **options) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/resize", json={"imageData": b64(image), **options}, timeout=30)

    def wait(self, token: str) -> dict:
        for _ in range(200):
            body = self.http.get(f"{self.base}/api/v1/resize/{token}?wait=5", timeout=30).json()
            if body["status"] in ("SUCCESS", "FAILURE"):
                return body
        raise AssertionError(f"job {token} did not end")

    def run(self, image: bytes, **options) -> dict:
        r = self.submit(image, **options)
        assert r.status_code == 202, r.text
        return self.wait(r.json()["token"])

    def pixels(self, body: dict, variant: str = "default") -> Image.Image:
        data = requests.get(body["variants"][variant]["url"], timeout=30).content
        return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def alice(stack):
    return Client(stack, "alice")


@pytest.fixture(scope="module")
def bob(stack):
    return Client(stack, "bob")


def png(size, color, mode="RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg(size, color=(255, 255, 255), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


# -- watermarks ------------------------------------------------------------------------------
def test_watermarks_are_kept_per_api_key(alice, bob):
    assert alice.put_mark("logo", png((40, 20), (255, 0, 0, 255))).status_code == 201
    replaced = alice.put_mark("logo", png((50, 25), (255, 0, 0, 255)))
    assert replaced.status_code == 200 and replaced.json()["watermark"]["width"] == 50
    assert [(m["name"], m["width"], m["height"]) for m in alice.marks()] == [("logo", 50, 25)]
    assert bob.marks() == []  # another key's marks are invisible
    r = bob.submit(jpeg((200, 100)), watermark={"image": "logo"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"
    assert "logo" in r.json()["error"]["message"]
    assert bob.http.delete(f"{bob.base}/api/v1/watermarks/logo").status_code == 404
    assert alice.marks()  # untouched by bob's delete


def test_watermark_uploads_follow_the_error_contract(alice):
    cases = [
        (alice.put_mark("Bad Name!", png((4, 4), (0, 0, 0, 255))), 422, "invalid_parameter"),
        (alice.put_mark("jpeg", jpeg((10, 10)), "image/jpeg"), 415, "unsupported_media_type"),
        (alice.put_mark("fake", jpeg((10, 10)), "image/png"), 415, "unsupported_image_format"),
        (alice.put_mark("huge", Image_bytes_noise((400, 400))), 413, "payload_too_large"),
        (alice.put_mark("cut", png((64, 64), (1, 2, 3, 255))[:60]), 422, "corrupt_image"),
    ]
    for r, status, code in cases:
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert "huge" not in [m["name"] for m in alice.marks()]


def Image_bytes_noise(size) -> bytes:  # noqa: N802 - reads as what it makes
    buf = io.BytesIO()
    photo(*size).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def test_a_watermark_is_drawn_where_asked_and_deleting_it_refuses_new_jobs(alice):
    assert alice.put_mark("red", png((20, 20), (255, 0, 0, 255))).status_code in (200, 201)
    body = alice.run(jpeg((400, 200)), width=200, watermark={"image": "red", "gravity": "south_east",
                                                              "opacity": 1.0, "scale": 0.1, "margin": 5})
    assert body["status"] == "SUCCESS", body
    image = alice.pixels(body)
    assert image.size == (200, 100)
    r, g, b = image.getpixel((200 - 5 - 10, 100 - 5 - 10))  # inside the 20x20 mark, 5 px in from the corner
    assert r > 200 and g < 60 and b < 60
    assert image.getpixel((20, 20))[1] > 200  # the rest stays white
    assert alice.http.delete(f"{alice.base}/api/v1/watermarks/red").status_code == 204
    r = alice.submit(jpeg((400, 200)), watermark={"image": "red"})
    assert r.status_code == 422


# -- what the upload was, and a placeholder -----------------------------------------------------
def test_status_describes_the_upload_as_displayed_and_a_placeholder(alice):
    source = Image.new("RGB", (300, 120), (30, 90, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed 120 x 300
    buf = io.BytesIO()
    source.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    body = alice.run(data, width=60)
    assert body["status"] == "SUCCESS" and body["reused"] is False
    assert body["source"] == {"width": 120, "height": 300, "format": "jpeg", "bytes": len(data)}
    color = body["placeholder"]["color"]
    assert re.fullmatch(r"#[0-9a-f]{6}", color)
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    assert all(abs(a - b) <= 6 for a, b in zip(rgb, (30, 90, 200))), color
    decoded = blurhash.decode(body["placeholder"]["blurhash"], 8, 8)
    assert blurhash.components(body["placeholder"]["blurhash"]) == (4, 3)
    assert all(abs(a - b) <= 12 for a, b in zip(decoded[4][4][:3], (30, 90, 200)))


# -- reuse of identical work -------------------------------------------------------------------
def decodes(stack) -> int:
    """How many jobs really decoded an image (reused ones record no processing stage)."""
    redis = make_redis(Settings.from_env(stack.env))
    return stage_count(redis, "decode_resize")


def keys(body: dict) -> list[str]:
    return sorted(urlparse(v["url"]).path for v in body["variants"].values())


def test_identical_work_is_reused_only_for_the_same_bytes_options_and_key(stack, alice, bob):
    data = jpeg((640, 480), (10, 120, 60))
    first = alice.run(data, width=100)
    before = decodes(stack)
    again = alice.run(data, width=100)
    assert again["status"] == "SUCCESS" and again["reused"] is True and first["reused"] is False
    assert keys(again) == keys(first) and again["token"] != first["token"]
    assert again["source"] == first["source"] and again["placeholder"] == first["placeholder"]
    assert alice.pixels(again).size == (100, 75)
    assert decodes(stack) == before  # nothing was decoded for the second
    others = [alice.run(data, width=101), bob.run(data, width=100), alice.run(jpeg((640, 480), (200, 30, 30)),
                                                                               width=100)]
    assert [o["reused"] for o in others] == [False, False, False]
    assert all(keys(o) != keys(first) for o in others)


def test_concurrent_identical_submits_do_the_work_once(stack, alice):
    buf = io.BytesIO()
    photo(3000, 2000).save(buf, "PNG", compress_level=1)  # slow enough to still be running when the rest arrive
    data = buf.getvalue()
    before = decodes(stack)
    tokens, errors = [], []

    def submit():
        r = alice.submit(data, width=1500, format="png")
        (tokens if r.status_code == 202 else errors).append(r.json().get("token") or r.text)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(tokens) == 4
    bodies = [alice.wait(t) for t in tokens]
    assert {b["status"] for b in bodies} == {"SUCCESS"}
    assert len({tuple(keys(b)) for b in bodies}) == 1  # one set of outputs for all four
    assert sorted(b["reused"] for b in bodies) == [False, True, True, True]
    assert decodes(stack) == before + 1


def test_replacing_a_watermark_is_not_hidden_by_reuse(alice):
    options = {"width": 100, "watermark": {"image": "swap", "gravity": "center", "opacity": 1.0}}
    data = jpeg((200, 100), (255, 255, 255))
    assert alice.put_mark("swap", png((20, 20), (255, 0, 0, 255))).status_code in (200, 201)
    red = alice.run(data, **options)
    assert alice.put_mark("swap", png((20, 20), (0, 0, 255, 255))).status_code == 200  # same size, new colour
    blue = alice.run(data, **options)
    assert blue["reused"] is False and keys(blue) != keys(red)
    assert alice.pixels(red).getpixel((50, 25))[0] > 200 and alice.pixels(blue).getpixel((50, 25))[2] > 200
