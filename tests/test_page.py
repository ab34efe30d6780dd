"""The upload page in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import requests

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
