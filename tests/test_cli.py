"""The v1.1 parts of the command-line client against the real service: smart crop, watermarks.

The CLI runs as a person runs it (a subprocess, its exit code and what it prints); the
service is a real stack with API keys, so every call carries a key as in production.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageStat

from resizer.security import hash_key
from tests.conftest import CORPUS, ROOT, start_stack

pytestmark = pytest.mark.e2e
KEY, OTHER_KEY = "cli-v11-key-0123456789", "cli-v11-other-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("cli"), workers=1,
                        API_KEYS=f"one:{hash_key(KEY)},two:{hash_key(OTHER_KEY)}")
    yield stack
    stack.stop()


def cli(stack, *args, key=KEY) -> subprocess.CompletedProcess:
    # PYTHONPATH: this checkout's package, whatever the virtualenv has installed.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RESIZER_URL": f"http://127.0.0.1:{stack.port}",
           "RESIZER_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "resizer.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def png(size=(120, 40), color=(255, 0, 0, 255), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA" if fmt != "JPEG" else "RGB", size, color if fmt != "JPEG" else color[:3]).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    def write(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    return write


def test_watermark_put_list_delete(stack, files):
    put = cli(stack, "watermark", "put", "logo", files("logo.png", png()))
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == f"stored watermark logo: 120x40, {len(png()):,} bytes"
    webp = png((64, 64), (0, 0, 255, 128), "WEBP")
    again = cli(stack, "watermark", "put", "logo", files("logo.webp", webp))
    assert again.returncode == 0 and again.stdout.startswith("replaced watermark logo: 64x64"), again
    assert cli(stack, "watermark", "put", "badge", files("badge.png", png((10, 20)))).returncode == 0

    listed = cli(stack, "watermark", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["badge", "logo"]  # sorted by name, one a line
    assert "64x64" in lines[1] and f"{len(webp):,} bytes" in lines[1]
    as_json = json.loads(cli(stack, "watermark", "list", "--json").stdout)
    assert [(m["name"], m["width"], m["height"]) for m in as_json] == [("badge", 10, 20), ("logo", 64, 64)]
    other = cli(stack, "watermark", "list", key=OTHER_KEY)  # another key sees none of them
    assert other.returncode == 0 and other.stdout.startswith("no watermarks yet")

    for name in ("logo", "badge"):
        gone = cli(stack, "watermark", "delete", name)
        assert gone.returncode == 0 and gone.stdout.strip() == f"deleted watermark {name}"
    again = cli(stack, "watermark", "delete", "logo")
    assert again.returncode == 3 and again.stderr.startswith("resizer: not_found: "), again.stderr
    assert cli(stack, "watermark", "list").stdout.startswith("no watermarks yet")


def test_watermark_put_failures_say_why(stack, files, tmp_path):
    bad_name = cli(stack, "watermark", "put", "Bad Name", files("a.png", png()))
    assert bad_name.returncode == 3 and "invalid_parameter" in bad_name.stderr
    jpeg = cli(stack, "watermark", "put", "photo", str(CORPUS / "good" / "hopper.jpg"))
    assert jpeg.returncode == 2 and "not a PNG or WebP image" in jpeg.stderr  # said before sending it
    jpeg_bytes = (CORPUS / "good" / "hopper.jpg").read_bytes()
    disguised = cli(stack, "watermark", "put", "photo", files("photo.png", jpeg_bytes))
    assert disguised.returncode == 3 and "unsupported_image_format" in disguised.stderr  # the service's word
    broken = cli(stack, "watermark", "put", "broken", files("broken.png", png()[:60]))
    assert broken.returncode == 3 and "corrupt_image" in broken.stderr
    missing = cli(stack, "watermark", "put", "x", str(tmp_path / "nope.png"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    wrong_key = cli(stack, "watermark", "list", key="not-a-key")
    assert wrong_key.returncode == 4 and "unauthorized" in wrong_key.stderr
    assert "no watermarks yet" in cli(stack, "watermark", "list").stdout  # nothing was stored


def test_submit_draws_the_named_watermark(stack, files, tmp_path):
    assert cli(stack, "watermark", "put", "red", files("red.png", png((50, 50)))).returncode == 0
    source = files("white.png", png((200, 200), (255, 255, 255, 255)))
    out = tmp_path / "marked.png"
    r = cli(stack, "submit", source, "--width", "100", "--format", "png", "--watermark", "red",
            "--watermark-gravity", "north_west", "--watermark-opacity", "1", "--watermark-scale", "0.2",
            "--watermark-margin", "10", "--wait", "-o", str(out))
    assert r.returncode == 0, r.stderr
    with Image.open(out) as image:
        rgb = image.convert("RGB")
        assert rgb.getpixel((20, 20)) == (255, 0, 0)  # the 20x20 mark, 10 px in from the top-left
        assert rgb.getpixel((5, 5)) == (255, 255, 255) and rgb.getpixel((80, 80)) == (255, 255, 255)

    unknown = cli(stack, "submit", source, "--watermark", "nope", "--wait")
    assert unknown.returncode == 3 and "invalid_parameter" in unknown.stderr and "nope" in unknown.stderr
    stray = cli(stack, "submit", source, "--watermark-opacity", "0.3")
    assert stray.returncode == 2 and "need --watermark NAME" in stray.stderr


def test_submit_gravity_smart_keeps_the_subject(stack, files, tmp_path):
    """A flat grey strip with a busy, colourful patch at its right end: smart keeps the patch,
    center keeps grey."""
    strip = Image.new("RGB", (600, 100), (128, 128, 128))
    draw = ImageDraw.Draw(strip)
    for i in range(0, 100, 10):
        draw.rectangle([500 + i, 0, 504 + i, 99], fill=(230, 40, 40))
        draw.rectangle([500, i, 599, i + 3], fill=(40, 200, 60))
    buf = io.BytesIO()
    strip.save(buf, "PNG")
    source = files("strip.png", buf.getvalue())
    means = {}
    for gravity in ("smart", "center"):
        out = tmp_path / f"{gravity}.png"
        r = cli(stack, "submit", source, "--width", "100", "--height", "100", "--fit", "cover", "--gravity",
                gravity, "--format", "png", "--wait", "-o", str(out))
        assert r.returncode == 0, r.stderr
        with Image.open(out) as image:
            means[gravity] = ImageStat.Stat(image.convert("HSV")).mean[1]  # saturation
    assert means["center"] < 5 < 60 < means["smart"], means


def test_a_repeated_submit_says_its_result_was_reused(stack, files, tmp_path):
    source = files("same.png", png((80, 60), (10, 120, 200, 255)))
    args = ["submit", source, "--width", "40", "--format", "png", "--wait"]
    first = cli(stack, *args, "-o", str(tmp_path / "a.png"))
    second = cli(stack, *args, "-o", str(tmp_path / "b.png"))
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert "reused" not in first.stdout and "outputs reused" in second.stdout
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_help_lists_the_v11_options():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "resizer.cli", "submit", "--help"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert "smart" in out and "--watermark NAME" in out and "--watermark-opacity" in out
    out = subprocess.run([sys.executable, "-m", "resizer.cli", "watermark", "--help"], capture_output=True,
                         text=True, env=env, check=True).stdout
    assert "{put,list,delete}" in out


def test_cli_sends_no_name_that_escapes_the_path(monkeypatch):
    """A name with a slash stays one path segment, so the service can refuse it (422), not route it."""
    from resizer import cli as cli_module

    seen = []
    client = cli_module.Client("http://service.invalid", "k")
    monkeypatch.setattr(client, "_request", lambda method, path, **kw: seen.append(path) or (204, {}))
    client.delete_watermark("../resize/x")
    assert seen == ["/api/v1/watermarks/..%2Fresize%2Fx"]

