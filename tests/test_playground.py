"""The playground page at /, driven in headless Chromium by Playwright against the real server:
streamed Markdown replies, errors that do not poison the conversation, conversations kept in
the browser, settings in the request, and a layout that fits a phone. Screenshots are kept in
tests/artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .builders import image_bytes
from .conftest import LiveServer, start_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

CODE_PROMPT = "Write a Python function that adds two numbers, in a code block."
# Markdown a model could send to attack the page: none of it may become live HTML.
HOSTILE_MARKDOWN = """# Title

Some **bold**, *italic* and `inline code`; [a link](https://example.com/docs) and
[a trap](javascript:window.pwned=3) and ![a picture](https://example.com/tracker.png).

<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>

1. first
2. second
   - nested

| name | value |
|------|------:|
| a    | 1     |

```python
print("<b>not bold</b>")  # a very long line of code that must scroll inside its block on a phone
```

A long address: https://example.com/a/very/long/path/that/should/wrap/instead/of/widening/the/page
"""


def test_page_is_served_and_needs_nothing_from_the_internet(http: httpx.Client) -> None:
    response = http.get("/", headers={"Accept": "text/html"})  # as browsers ask
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/v1/chat/completions" in page
    assert "http://" not in page and "https://" not in page  # no CDN, works offline
    # every resource is inline (the favicon is a data: URI) and every call goes to this server
    loaded = re.findall(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', page)
    assert loaded and all(url.startswith("data:") for url in loaded), loaded
    fetched = re.findall(r"fetch\(\s*[\"'`]([^\"'`]*)", page)
    assert fetched and all(url.startswith("/") for url in fetched), fetched


def test_no_playground_flag_turns_it_off(tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "256", "--no-playground"], tmp_path)
    try:
        # `/` is then only Ollama's probe, for browsers too
        page = httpx.get(f"{live.base_url}/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and page.text == "Ollama is running"
    finally:
        live.stop()


@dataclass
class Playground:
    """One browser tab on the playground, with the chat requests it sent."""

    page: Any
    width: int
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)

    def finished(self) -> int:
        return self.page.locator(".msg.assistant[data-state=done], .msg.error").count()

    def send(self, text: str) -> None:
        """Types TEXT, sends it and waits until the reply (or an error) is complete."""
        before = self.finished()
        self.page.fill("#prompt", text)
        self.page.click("#send")
        self.wait_for_turn(before)

    def wait_for_turn(self, before: int) -> None:
        self.page.wait_for_function(
            "n => document.querySelectorAll('.msg.assistant[data-state=done], .msg.error')"
            ".length > n && document.querySelector('#stop').hidden", arg=before, timeout=120_000)

    def configure(self, **values: str) -> None:
        """Fills the settings panel as a user does (ids: system, temperature, top-p,
        max-tokens, seed)."""
        self.page.click("#open-settings")
        for name, value in values.items():
            self.page.fill(f"#{name.replace('_', '-')}", value)
        self.page.click("#settings .primary")

    def reload(self) -> None:
        self.page.reload()
        self.page.wait_for_function("!document.querySelector('#send').disabled")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        assert path.stat().st_size > 1000
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield launched
        launched.close()


@pytest.fixture
def open_playground(browser: Any, server: LiveServer) -> Iterator[Callable[..., Playground]]:
    """Opens the page in a fresh browser profile (empty localStorage) at a given width, and
    checks afterwards that no script error happened."""
    contexts, errors = [], []

    def open_(width: int = 1280, live: LiveServer = server, wait: bool = True) -> Playground:
        context = browser.new_context(
            viewport={"width": width, "height": 844 if width < 500 else 800},
            permissions=["clipboard-read", "clipboard-write"])
        contexts.append(context)
        page = context.new_page()
        tab = Playground(page, width)

        def record(request: Any) -> None:
            if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
                tab.bodies.append(request.post_data_json)
                tab.headers.append(request.headers)

        page.on("request", record)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live.base_url}/")
        if wait:
            page.wait_for_function("!document.querySelector('#send').disabled")
        return tab

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def store_conversation(tab: Playground, markdown: str) -> None:
    """Puts a conversation with a given assistant reply into the page's localStorage."""
    conversation = {"id": "stored", "title": "A stored chat", "updated": 1, "messages": [
        {"role": "user", "content": "Show me some Markdown"},
        {"role": "assistant", "content": markdown, "stats": "stored"},
    ]}
    tab.page.evaluate("""conversation => {
        localStorage.setItem('llamaserve-conversations', JSON.stringify([conversation]));
        localStorage.setItem('llamaserve-current', conversation.id);
    }""", conversation)
    tab.reload()


def assert_fits(tab: Playground) -> None:
    page, width = tab.page, tab.width
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate("document.body.scrollWidth") <= width
    send = page.locator("#send").bounding_box()
    assert send is not None and send["x"] >= 0 and send["x"] + send["width"] <= width
    assert page.locator("#send").is_visible()
    message_box = page.locator("#prompt").bounding_box()
    assert message_box is not None and message_box["width"] >= width / 2


@needs_chromium
@pytest.mark.parametrize("width", [1280, 390])
def test_a_streamed_reply_renders_its_code_block(
        open_playground: Callable[..., Playground], width: int) -> None:
    tab = open_playground(width)
    assert tab.page.input_value("#model") == "smollm2"
    tab.configure(temperature="0", seed="1")  # SmolLM2 then reliably answers with a fence
    tab.page.fill("#prompt", CODE_PROMPT)
    tab.page.click("#send")
    tab.page.wait_for_selector(".msg.assistant[data-state=streaming]")
    tab.wait_for_turn(0)
    reply = tab.page.locator(".msg.assistant")
    assert "tokens/s" in reply.inner_text() and "completion tokens" in reply.inner_text()
    code = reply.locator("pre code").first
    assert "return" in code.inner_text()
    assert "```" not in reply.locator(".body").inner_text()  # rendered, not raw Markdown
    reply.locator(".code-head button").first.click()
    assert tab.page.evaluate("navigator.clipboard.readText()") == code.text_content()
    assert tab.page.locator(".msg.error").count() == 0
    assert_fits(tab)
    tab.screenshot("playground.png" if width > 500 else "playground-mobile.png")


@needs_chromium
def test_markdown_from_the_model_is_rendered_and_never_run(
        open_playground: Callable[..., Playground]) -> None:
    # A stored reply is drawn by the same renderMarkdown() that draws a streaming one.
    tab = open_playground()
    store_conversation(tab, HOSTILE_MARKDOWN)
    body = tab.page.locator(".msg.assistant .body")
    assert body.locator("h1").inner_text() == "Title"
    assert body.locator("strong").first.inner_text() == "bold"
    assert body.locator("ol > li").count() == 2 and body.locator("ol ul li").count() == 1
    assert body.locator("table td").count() == 2
    assert '<b>not bold</b>' in body.locator("pre code").inner_text()
    assert "<script>window.pwned=2</script>" in body.inner_text()  # shown as text
    assert tab.page.evaluate("window.pwned") is None
    assert body.locator("img, script, iframe").count() == 0
    hrefs = [a.get_attribute("href") for a in body.locator("a").all()]
    assert "https://example.com/docs" in hrefs
    assert all(href.startswith("https://") for href in hrefs), hrefs


@needs_chromium
def test_a_too_long_prompt_is_an_error_that_is_not_sent_again(
        open_playground: Callable[..., Playground]) -> None:
    tab = open_playground(390)
    tab.configure(max_tokens="16")
    tab.send("word " * 1100)  # more tokens than the server's 1024-token context
    error = tab.page.locator(".msg.error")
    assert "maximum context length" in error.inner_text()
    assert "left out of the conversation" in error.inner_text()
    assert tab.page.locator(".msg.assistant").count() == 0  # no empty reply bubble
    tab.send("Say hi")
    assert tab.page.locator(".msg.assistant[data-state=done]").count() == 1
    assert tab.bodies[-1]["messages"] == [{"role": "user", "content": "Say hi"}]
    tab.screenshot("playground-error-mobile.png")


@needs_chromium
def test_an_image_is_previewed_and_a_text_model_refusing_it_does_not_stick(
        open_playground: Callable[..., Playground], tmp_path: Path) -> None:
    picture = tmp_path / "red.png"
    picture.write_bytes(image_bytes("PNG"))
    tab = open_playground()
    tab.configure(max_tokens="16")
    tab.page.set_input_files("#image", str(picture))
    tab.page.wait_for_selector("#previews img")
    tab.page.click("#previews button")  # removed before sending
    assert tab.page.locator("#previews img").count() == 0
    tab.page.set_input_files("#image", str(picture))
    tab.page.wait_for_selector("#previews img")
    tab.send("What is in this image?")
    assert "does not accept images" in tab.page.locator(".msg.error").inner_text()
    assert tab.page.locator("#previews img").count() == 0
    tab.send("Say hi")
    assert tab.page.locator(".msg.assistant[data-state=done]").count() == 1
    assert "image_url" not in str(tab.bodies[-1]["messages"])
    assert tab.bodies[-1]["messages"] == [{"role": "user", "content": "Say hi"}]


@needs_chromium
def test_a_server_out_of_reach_is_named_and_retry_sends_the_message_once(
        open_playground: Callable[..., Playground], server: LiveServer) -> None:
    tab = open_playground()
    tab.configure(max_tokens="16")
    tab.page.route("**/v1/chat/completions", lambda route: route.abort())  # as if it were down
    tab.send("Say hi")
    error = tab.page.locator(".msg.error").inner_text()
    assert f"Could not reach the llamaserve server at {server.base_url}" in error
    assert "Failed to fetch" not in error
    tab.page.unroute("**/v1/chat/completions")
    tab.page.click(".msg.error button[data-action=retry]")
    tab.wait_for_turn(0)
    assert tab.page.locator(".msg.error").count() == 0
    assert tab.page.locator(".msg.assistant[data-state=done]").count() == 1
    assert tab.bodies[-1]["messages"] == [{"role": "user", "content": "Say hi"}]


@needs_chromium
def test_a_reloaded_page_keeps_its_conversations(
        open_playground: Callable[..., Playground]) -> None:
    tab = open_playground()
    tab.configure(max_tokens="16")
    tab.send("Say hi")
    reply = tab.page.locator(".msg.assistant .body").inner_text()
    tab.reload()
    assert tab.page.locator(".msg.user .body").inner_text() == "Say hi"
    assert tab.page.locator(".msg.assistant .body").inner_text() == reply
    tab.page.click("#new-chat")
    assert tab.page.locator(".msg").count() == 0
    tab.send("Say bye")
    assert tab.page.locator("#conversations li").count() == 2
    tab.page.click("#conversations button[title='Say hi']")
    assert tab.page.locator(".msg.assistant .body").inner_text() == reply
    tab.send("And again")
    # the second turn of the first chat carries the first turn as history
    assert [m["content"] for m in tab.bodies[-1]["messages"]] == ["Say hi", reply, "And again"]


@needs_chromium
def test_settings_reach_the_request(open_playground: Callable[..., Playground]) -> None:
    tab = open_playground()
    tab.configure(system="Answer in JSON.", temperature="0.2", top_p="0.9", max_tokens="16",
                  seed="7")
    tab.page.click("#open-settings")
    tab.page.check("#json-mode")
    tab.page.click("#settings .primary")
    assert "JSON mode" in tab.page.inner_text("#hint")
    tab.send("List two colors")
    body = tab.bodies[-1]
    assert body["messages"] == [{"role": "system", "content": "Answer in JSON."},
                                {"role": "user", "content": "List two colors"}]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["max_tokens"] == 16
    assert body["response_format"] == {"type": "json_object"}
    assert body["stream"] is True and body["model"] == "smollm2"
    tab.reload()  # settings are kept too
    assert tab.page.input_value("#temperature") == "0.2"
    assert tab.page.input_value("#system") == "Answer in JSON."


@needs_chromium
def test_regenerate_and_edit_resend_replace_the_reply(
        open_playground: Callable[..., Playground]) -> None:
    tab = open_playground()
    tab.configure(max_tokens="16")
    tab.send("Say hi")
    tab.page.click(".msg.assistant button[data-action=regenerate]")
    tab.wait_for_turn(0)
    assert tab.page.locator(".msg.assistant").count() == 1
    assert tab.bodies[1]["messages"] == tab.bodies[0]["messages"]  # the old reply is not sent
    tab.page.click(".msg.user button[data-action=edit]")
    tab.page.fill(".edit-box", "Say bye")
    tab.page.click(".msg.user button[data-action=send-edit]")
    tab.wait_for_turn(0)
    assert tab.page.locator(".msg.user").count() == 1
    assert tab.page.locator(".msg.user .body").inner_text() == "Say bye"
    assert tab.bodies[2]["messages"] == [{"role": "user", "content": "Say bye"}]


@needs_chromium
@pytest.mark.parametrize("width", [360, 390, 430])
def test_the_page_fits_a_phone(open_playground: Callable[..., Playground], width: int) -> None:
    tab = open_playground(width)
    store_conversation(tab, HOSTILE_MARKDOWN)  # a long code line, a table, a long address
    assert_fits(tab)
    assert tab.page.locator("#sidebar").is_hidden()  # a drawer on phones
    tab.page.click("#menu")
    tab.page.wait_for_function(
        "getComputedStyle(document.querySelector('#sidebar')).transform === 'none'")
    drawer = tab.page.locator("#sidebar").bounding_box()
    assert drawer is not None and drawer["x"] >= 0 and drawer["width"] < width
    tab.page.click("#conversations button.open")
    tab.page.locator("#sidebar").wait_for(state="hidden")
    assert_fits(tab)


@needs_chromium
def test_send_waits_for_a_model_and_the_key_loads_the_list_as_it_is_typed(
        open_playground: Callable[..., Playground], tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "256", "--api-key", "SECRET"], tmp_path)
    try:
        tab = open_playground(390, live=live, wait=False)
        tab.page.wait_for_selector("#banner:not([hidden])")
        assert "API key" in tab.page.inner_text("#banner")
        assert tab.page.locator("#send").is_disabled()
        tab.page.click("#banner button")  # opens the settings, where the key goes
        tab.page.locator("#key").press_sequentially("SECRET")  # typed; the field keeps focus
        tab.page.wait_for_function("!document.querySelector('#send').disabled")
        assert tab.page.input_value("#model") == "smollm2"
        assert tab.page.locator("#banner").is_hidden()
        tab.page.fill("#max-tokens", "8")
        tab.page.click("#settings .primary")
        tab.send("Hi")
        assert tab.page.locator(".msg.error").count() == 0
        assert tab.bodies[-1]["model"] == "smollm2"
        assert tab.headers[-1]["authorization"] == "Bearer SECRET"
    finally:
        live.stop()
