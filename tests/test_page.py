"""The upload page in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
