"""The playground page at /: loads offline, lists the model, streams a reply (headless
Chromium driven by Playwright; the screenshot is kept in tests/artifacts/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, start_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_is_served_and_needs_nothing_from_the_internet(http: httpx.Client) -> None:
    response = http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/v1/chat/completions" in page
    assert "http://" not in page and "https://" not in page  # no CDN, works offline


def test_no_playground_flag_turns_it_off(tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "256", "--no-playground"], tmp_path)
    try:
        assert httpx.get(f"{live.base_url}/").status_code == 404
    finally:
        live.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_a_message_streams_a_reply_in_the_browser(server: LiveServer) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        try:
            page = browser.new_page()
            page.goto(f"{server.base_url}/")
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            assert page.input_value("#model") == "smollm2"
            page.fill("#prompt", "Say this is a test")
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-state=done]", timeout=60_000)
            reply = page.inner_text(".msg.assistant")
            assert "tokens/s" in reply and "completion tokens" in reply
            assert page.locator(".msg.error").count() == 0
            page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "playground.png").stat().st_size > 1000
