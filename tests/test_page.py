"""The upload page in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from resizer.imaging.spec import ANCHORS, GRAVITIES
from resizer.security import hash_key
from tests.conftest import CORPUS, start_stack

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "page-test-key-0123456789"
# Closed network here: no background connections, no component updates.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("page"), workers=1, API_KEYS=f"page:{hash_key(KEY)}")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_upload_page_resizes_an_image_and_shows_it(keyed_stack, browser, tmp_path):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"http://127.0.0.1:{keyed_stack.port}/")
    assert page.title() == "Image resizer"
    page.set_input_files("#file", str(CORPUS / "good" / "hopper_orientation_6.jpg"))
    page.fill("#width", "96")
    page.select_option("#format", "webp")
    page.fill("#key", KEY)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    # A function predicate, not an expression: Playwright evals an expression string in the page
    # on every poll, which this page's CSP (script-src 'self', no unsafe-eval) rightly refuses.
    page.wait_for_function("() => { const img = document.getElementById('output');"
                           " return img.complete && img.naturalWidth > 0; }", timeout=15_000)
    size = page.evaluate("[document.getElementById('output').naturalWidth, "
                         "document.getElementById('output').naturalHeight]")
    assert size == [96, 96]
    assert "96×96 webp" in page.text_content("#meta")
    assert page.get_attribute("#download", "href").startswith(keyed_stack.env["S3_ENDPOINT_URL"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upload-page.png"), full_page=True)
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.close()


def scene(size=(1200, 800)) -> bytes:
    """A generated photo-like picture: an evening sky, hills, and a sun well right of the centre."""
    w, h = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(h):  # sky from deep blue to orange
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(40 + 210 * t), int(60 + 90 * t), int(140 - 80 * t)))
    draw.ellipse([int(w * 0.72), int(h * 0.30), int(w * 0.86), int(h * 0.51)], fill=(255, 214, 90))
    draw.polygon([(0, h), (0, int(h * 0.72)), (int(w * 0.3), int(h * 0.58)), (int(w * 0.62), int(h * 0.75)),
                  (w, int(h * 0.62)), (w, h)], fill=(34, 52, 40))
    buf = io.BytesIO()
    image.filter(ImageFilter.SMOOTH).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def badge() -> bytes:
    """A watermark: white text on a translucent dark pill, with alpha."""
    mark = Image.new("RGBA", (360, 96), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    draw.rounded_rectangle([0, 0, 359, 95], radius=48, fill=(20, 20, 20, 170))
    draw.text((180, 48), "© resizer", fill=(255, 255, 255, 255), anchor="mm", font=ImageFont.load_default(52))
    buf = io.BytesIO()
    mark.save(buf, "PNG")
    return buf.getvalue()


def record_csp(page) -> None:
    # Recorded by the browser itself, whatever the console says; an init script is not subject to the CSP.
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                         " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def test_upload_page_offers_smart_gravity_and_watermarks_and_paints_the_placeholder(keyed_stack, browser, tmp_path):
    """Gravity (with smart) and a watermark stored through the page are sent with the job; between the
    status and the image, the status's placeholder colour and BlurHash are painted; then the image shows."""
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{keyed_stack.port}"
    storage = keyed_stack.env["S3_ENDPOINT_URL"]
    (tmp_path / "evening.jpg").write_bytes(scene())
    (tmp_path / "badge.png").write_bytes(badge())
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    # Loading the watermarks before the key is typed is a 401, which the browser logs as a failed load.
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    record_csp(page)
    submits = []
    page.on("request", lambda r: submits.append(r) if r.method == "POST" and "/api/v1/resize" in r.url else None)
    page.goto(base)
    options = page.eval_on_selector_all("#gravity option", "els => els.map(e => e.value)")
    assert sorted(options) == sorted(GRAVITIES) and "smart" in options
    assert sorted(page.eval_on_selector_all("#wm-gravity option", "els => els.map(e => e.value)")) == sorted(ANCHORS)

    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")  # the select is filled with this key's watermarks
    expect(page.locator("#wm-note")).to_have_text("none stored yet", timeout=10_000)
    page.click("#wm-new summary")
    page.fill("#wm-name", "badge")
    page.set_input_files("#wm-file", str(tmp_path / "badge.png"))
    page.click("#wm-upload")
    expect(page.locator("#status")).to_contain_text("Stored watermark badge (360×96", timeout=10_000)
    expect(page.locator("#watermark")).to_have_value("badge")
    listed = requests.get(f"{base}/api/v1/watermarks", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    assert [m["name"] for m in listed["watermarks"]] == ["badge"]

    page.set_input_files("#file", str(tmp_path / "evening.jpg"))
    page.fill("#width", "640")
    page.fill("#height", "400")
    page.select_option("#fit", "cover")
    page.select_option("#gravity", "smart")
    page.select_option("#format", "webp")
    page.fill("#wm-scale", "30")
    # Hold the image's download: what the page shows meanwhile is the placeholder alone.
    held = []
    page.route(f"{storage}/**", lambda route: held.append(route))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    token = page.get_attribute("#result", "data-token")
    status = requests.get(f"{base}/api/v1/resize/{token}", headers={"Authorization": f"Bearer {KEY}"},
                          timeout=5).json()
    color = status["placeholder"]["color"]
    frame = page.locator("#frame")
    expect(frame).to_have_attribute("data-placeholder", color)
    expect(frame).to_have_attribute("data-blurhash", "painted")
    rgb = tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    assert frame.evaluate("f => getComputedStyle(f).backgroundColor") == "rgb({}, {}, {})".format(*rgb)
    assert frame.evaluate("f => getComputedStyle(f).backgroundImage").startswith('url("data:image/png;base64,')
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright dispatch the route event; returns as soon as it has
    assert held and page.evaluate("() => document.getElementById('output').naturalWidth") == 0
    assert page.evaluate("() => getComputedStyle(document.getElementById('output')).opacity") == "0"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#result").screenshot(path=str(ARTIFACTS / "upload-page-placeholder.png"))

    for route in held:
        route.continue_()
    page.unroute(f"{storage}/**")
    page.wait_for_function("() => { const img = document.getElementById('output');"
                           " return img.complete && img.naturalWidth > 0; }", timeout=15_000)
    expect(frame).to_have_class("frame loaded")
    expect(page.locator("#status")).to_have_text("Done.")
    assert page.evaluate("() => [document.getElementById('output').naturalWidth,"
                         " document.getElementById('output').naturalHeight]") == [640, 400]
    expect(page.locator("#source")).to_have_text(re.compile(r"^From a 1200×800 jpeg of \d+ KB\.$"))

    (submit,) = submits
    form = submit.post_data_buffer.decode("latin-1")
    assert 'name="gravity"\r\n\r\nsmart\r\n' in form
    sent = json.loads(form.split('name="watermark"\r\n\r\n')[1].split("\r\n")[0])
    assert sent == {"image": "badge", "gravity": "south_east", "opacity": 0.5, "scale": 0.3, "margin": 16}
    # The mark was drawn: its white text (at half opacity) lights the dark hills in the bottom-right corner.
    with Image.open(io.BytesIO(requests.get(status["resized_image_url"], timeout=5).content)) as out:
        gray = out.convert("L")
        assert gray.crop((440, 340, 620, 380)).getextrema()[1] > 100  # the mark: 192x51 px, 16 px in
        assert gray.crop((520, 300, 620, 328)).getextrema()[1] < 80  # just above it: the hills alone

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_function("() => getComputedStyle(document.getElementById('output')).opacity === '1'")  # faded in
    page.screenshot(path=str(ARTIFACTS / "upload-page-watermark.png"), full_page=True)
    assert page.evaluate("() => window.__csp") == []
    assert not errors, errors
    page.close()


def test_upload_page_keeps_the_placeholder_when_the_image_cannot_load(keyed_stack, browser):
    from playwright.sync_api import expect

    storage = keyed_stack.env["S3_ENDPOINT_URL"]
    page = browser.new_page()
    record_csp(page)
    page.route(f"{storage}/**", lambda route: route.abort())
    page.goto(f"http://127.0.0.1:{keyed_stack.port}/")
    page.fill("#key", KEY)
    page.set_input_files("#file", str(CORPUS / "good" / "hopper.png"))
    page.fill("#width", "64")
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("did not load", timeout=30_000)
    expect(page.locator("#status")).to_have_class("error")
    frame = page.locator("#frame")
    expect(frame).to_have_attribute("data-blurhash", "painted")
    color = frame.get_attribute("data-placeholder")
    assert color and color.startswith("#") and len(color) == 7
    assert frame.evaluate("f => getComputedStyle(f).backgroundImage").startswith('url("data:image/png;base64,')
    assert page.is_visible("#result") and page.get_attribute("#frame", "class") == "frame"
    assert page.evaluate("() => window.__csp") == []
    page.close()


def test_upload_page_shows_api_errors(keyed_stack, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"http://127.0.0.1:{keyed_stack.port}/")
    page.set_input_files("#file", str(CORPUS / "bad" / "text.png"))
    page.fill("#key", KEY)
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("unsupported_image_format", timeout=15_000)
    expect(page.locator("#status")).to_have_class("error")
    page.fill("#key", "wrong")
    page.set_input_files("#file", str(CORPUS / "good" / "hopper.jpg"))
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("unauthorized", timeout=15_000)
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.close()


def test_docs_page_is_swagger_ui_and_try_it_out_calls_the_api(keyed_stack, browser):
    """/docs renders every operation of /api/v1/openapi.json, and "Try it out" runs a real
    request (with the key given to "Authorize"): an unknown token answers the contract's JSON 404."""
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{keyed_stack.port}"
    paths = requests.get(f"{base}/api/v1/openapi.json", timeout=5).json()["paths"]
    operations = [op["operationId"] for ops in paths.values() for op in ops.values()]
    page = browser.new_page()
    errors: list[str] = []
    # A failed load is reported below, by URL (the tried request's 404 is one).
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []  # every response of 400 or more (the page's own assets must all load)
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    # Recorded by the browser itself, whatever the console says; an init script is not subject to the CSP.
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                         " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page.goto(f"{base}/docs")
    for operation_id in operations:  # untagged operations are grouped under "default"
        expect(page.locator(f"#operations-default-{operation_id}")).to_be_visible(timeout=15_000)

    page.click("button.authorize")
    page.fill(".auth-container input", KEY)
    page.click(".auth-btn-wrapper button.authorize")
    page.click(".auth-btn-wrapper button.btn-done")

    token = str(uuid.uuid4())
    op = page.locator("#operations-default-getResizeStatus")
    op.locator(".opblock-summary").click()
    op.locator("button.try-out__btn").click()
    op.locator("tr[data-param-name='token'] input").fill(token)
    op.locator("button.execute").click()
    live = op.locator(".live-responses-table")
    expect(live.locator("tbody .response-col_status")).to_have_text("404", timeout=15_000)
    body = live.locator("tbody .response-col_description pre.microlight").first.text_content()
    assert json.loads(body)["error"]["code"] == "not_found", body
    assert f"/api/v1/resize/{token}" in op.locator(".request-url pre").text_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-page.png"), full_page=True)
    assert page.evaluate("() => window.__csp") == []
    assert not errors, errors  # no CSP report, no script error
    assert failed == [f"{base}/api/v1/resize/{token}"]  # the tried request, nothing else
    page.close()


@pytest.mark.parametrize("width", [1280, 900, 640])
def test_upload_page_controls_stay_put_while_the_watermark_list_reloads(keyed_stack, browser, width):
    """Typing a key reloads the watermark list when the field loses focus, i.e. on the mouse-down of
    the click on Resize: if that moved the button, the mouse-up would land elsewhere and the click
    would be lost. The list's and its note's boxes are fixed, so the button stays where it was."""
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{keyed_stack.port}"
    requests.put(f"{base}/api/v1/watermarks/steady", data=badge(), timeout=10,
                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "image/png"}).raise_for_status()
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(base)
    note, marks = page.locator("#wm-note"), page.locator("#watermark option")
    expect(note).to_have_text("enter the API key to see yours", timeout=10_000)
    boxes = {"no key": page.locator("#submit").bounding_box()}

    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    expect(marks.filter(has_text="steady")).to_have_count(1, timeout=10_000)
    expect(note).to_have_text("")
    boxes["key with watermarks"] = page.locator("#submit").bounding_box()

    page.fill("#key", "wrong")
    page.dispatch_event("#key", "change")
    expect(marks).to_have_count(1, timeout=10_000)
    expect(note).to_have_text("enter the API key to see yours")
    boxes["wrong key"] = page.locator("#submit").bounding_box()

    page.route("**/api/v1/watermarks", lambda route: route.fulfill(status=503, body="upstream unavailable"))
    page.dispatch_event("#key", "change")
    expect(note).to_contain_text("without JSON", timeout=10_000)
    assert "503" in note.get_attribute("title")  # the whole message, where the box cuts it
    boxes["service error"] = page.locator("#submit").bounding_box()

    assert len({tuple(b.values()) for b in boxes.values()}) == 1, boxes
    page.close()
