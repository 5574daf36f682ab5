"""Qwen2.5-VL (M-RoPE): an image takes more KV cells than positions, and every limit counts
cells. A tiny synthetic pair under the catalog's `qwen-vl` names, pulled from the fake Hub
and served by `llamaserve run qwen-vl`, as a user would."""

from __future__ import annotations

import json
import logging
import os
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

from .builders import data_uri, image_bytes, write_tiny_qwen25vl
from .conftest import LiveServer, app_with_failing_decode, assert_openai_error, start_server
from .fake_hub import FakeHub

CTX = 512  # per sequence: a generation without max_tokens reaches its end in about a second
# A 64x64 image is resized to 84x84: 6x6 patches of 14, merged 2x2 into 9 tokens that take 9
# KV cells but only 3 M-RoPE positions. mtmd wraps them in <|vision_start|>/<|vision_end|>.
IMAGE_TOKENS = 9
IMAGE_POSITIONS = 3
WRAPPED_IMAGE_TOKENS = IMAGE_TOKENS + 2
PNG = image_bytes("PNG", size=(64, 64))
PNG_URI = data_uri(PNG)


def catalog_names() -> tuple[str, str, str]:
    """(Hub repo, weights file, projector file) of the catalog's `qwen-vl` entry."""
    from llamaserve.models.catalog import HubSource, load_catalog

    entry = load_catalog().models["qwen-vl"]
    assert isinstance(entry.source, HubSource) and entry.projector is not None
    return entry.source.hub, entry.source.file, entry.projector


@pytest.fixture(scope="session")
def qwen_files(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny pair, under the file names the catalog's `qwen-vl` entry downloads."""
    _, weights, projector = catalog_names()
    folder = tmp_path_factory.mktemp("qwen-vl-files")
    return write_tiny_qwen25vl(folder / weights, folder / projector, smollm2_path, context=CTX)


@pytest.fixture(scope="session")
def qwen_server(qwen_files: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`llamaserve pull qwen-vl` from the fake Hub, then `llamaserve run qwen-vl --ctx 512`."""
    repo = catalog_names()[0]
    hub = FakeHub()
    for path in qwen_files:
        hub.add(repo, path.name, path)
    hub.start()
    folder = tmp_path_factory.mktemp("qwen-vl-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {
        "HF_ENDPOINT": hub.url, "HF_HOME": str(folder / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    try:
        pulled = subprocess.run([sys.executable, "-m", "llamaserve", "pull", "qwen-vl"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert pulled.returncode == 0, pulled.stderr
        live = start_server(["qwen-vl", "--ctx", str(CTX), "--allow-private-urls"], folder,
                            env=env)
    finally:
        hub.stop()  # everything is in the cache now: `run` needs no network
    yield live
    live.stop()


@pytest.fixture(scope="session")
def qwen(qwen_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=qwen_server.v1, api_key="IGNORED", max_retries=0, timeout=120)


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = PNG if self.path == "/img.png" else b"no such image"
        self.send_response(200 if self.path == "/img.png" else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    web = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{web.server_address[1]}/img.png"
    web.shutdown()
    web.server_close()


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def image(url: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": url}


def ask(client: openai.OpenAI, content: Any, **fields: Any) -> Any:
    fields.setdefault("temperature", 0)
    return client.chat.completions.create(
        model="qwen-vl", messages=[{"role": "user", "content": content}], **fields)


def usage(completion: Any) -> Any:
    assert completion.usage is not None
    return completion.usage


# -- images in each form, and what they count -------------------------------------------------

def test_image_as_plain_string_url_counts_its_tokens(qwen: openai.OpenAI, image_url: str) -> None:
    # The empty text part renders the same separator as the image part.
    without = ask(qwen, [text("Describe."), text("")], max_tokens=4)
    with_image = ask(qwen, [text("Describe."), image(image_url)], max_tokens=4)
    assert with_image.choices[0].finish_reason == "length"
    assert usage(with_image).prompt_tokens == usage(without).prompt_tokens + WRAPPED_IMAGE_TOKENS


@pytest.mark.parametrize("form", ["object", "data_uri"])
def test_image_as_url_object_and_as_data_uri(qwen: openai.OpenAI, image_url: str,
                                             form: str) -> None:
    part = image({"url": image_url}) if form == "object" else image(PNG_URI)
    completion = ask(qwen, [text("Describe."), part], max_tokens=4)
    reference = ask(qwen, [text("Describe."), image(image_url)], max_tokens=4)
    assert usage(completion).prompt_tokens == usage(reference).prompt_tokens
    assert completion.choices[0].message.content == reference.choices[0].message.content


def test_two_images_in_one_message(qwen: openai.OpenAI) -> None:
    one = ask(qwen, [text("Compare."), image(PNG_URI), text("")], max_tokens=4)
    two = ask(qwen, [text("Compare."), image(PNG_URI), image(PNG_URI)], max_tokens=4)
    assert usage(two).prompt_tokens == usage(one).prompt_tokens + WRAPPED_IMAGE_TOKENS
    assert two.choices[0].finish_reason == "length"


# -- running to the end of the context --------------------------------------------------------

def test_without_max_tokens_an_image_request_runs_to_the_end_of_the_context(
    qwen: openai.OpenAI,
) -> None:
    # The tiny model never stops on its own: the completion takes every cell the prompt left.
    completion = ask(qwen, [text("Describe."), image(PNG_URI)])
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content
    assert usage(completion).total_tokens == CTX


def test_streamed_without_max_tokens_ends_with_length_not_an_error(qwen: openai.OpenAI) -> None:
    stream = ask(qwen, [text("Describe."), image(PNG_URI)], stream=True,
                 stream_options={"include_usage": True})
    chunks = list(stream)  # an in-band error would raise openai.APIError here
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and finishes.count("length") == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == CTX


def test_the_seed_request_with_empty_functions_and_stop(qwen_server: LiveServer,
                                                        image_url: str) -> None:
    body = {"model": "qwen-vl", "functions": [], "stop": [], "messages": [{
        "role": "user",
        "content": [text("What is in this image?"), image({"url": image_url})],
    }]}
    response = httpx.post(f"{qwen_server.v1}chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["finish_reason"] in ("length", "stop")
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["usage"]["total_tokens"] <= CTX


def test_cells_that_do_not_fit_are_a_400_naming_the_context(qwen_server: LiveServer,
                                                           qwen: openai.OpenAI) -> None:
    content = [text("Describe."), image(PNG_URI)]
    prompt_cells = usage(ask(qwen, content, max_tokens=1)).prompt_tokens
    prompt_positions = prompt_cells - (IMAGE_TOKENS - IMAGE_POSITIONS)
    max_tokens = CTX - prompt_positions  # positions would fit exactly, cells do not
    body = {"model": "qwen-vl", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{qwen_server.v1}chat/completions", json=body, timeout=120)
    error = assert_openai_error(response, 400)
    assert error["param"] == "max_tokens"
    assert f"maximum context length is {CTX} tokens" in error["message"]
    assert f"{prompt_cells} in the prompt" in error["message"]
    # and exactly the cells that are left do fit
    fits = ask(qwen, content, max_tokens=CTX - prompt_cells)
    assert fits.choices[0].finish_reason == "length"
    assert usage(fits).total_tokens == CTX


# -- the prefix cache -------------------------------------------------------------------------

def test_text_turn_after_an_image_turn_reuses_the_cached_prefix(qwen_server: LiveServer) -> None:
    first_turn = {"role": "user", "content": [text("Look at this."), image(PNG_URI)]}

    def chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        body = {"model": "qwen-vl", "max_tokens": 8, "temperature": 0, "messages": messages,
                **fields}
        response = httpx.post(f"{qwen_server.v1}chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    first = chat([first_turn])
    reply = first["choices"][0]["message"]["content"]
    conversation = [first_turn, {"role": "assistant", "content": reply},
                    {"role": "user", "content": "And what colour is on the left?"}]
    cached = chat(conversation)
    fresh = chat(conversation, cache_prompt=False)
    assert cached["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert cached["usage"]["prompt_tokens"] == fresh["usage"]["prompt_tokens"]
    assert cached["choices"][0]["finish_reason"] == "length"
    assert cached["choices"][0]["message"]["content"] == fresh["choices"][0]["message"]["content"]


# -- a decode failure is the server's, never the client's --------------------------------------

@pytest.fixture
def failing_decode_app(qwen_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> Iterator[tuple[Any, list[int]]]:
    """The app in-process on the tiny pair, with llama_decode failing from the call number set
    in the returned list on (conftest.app_with_failing_decode)."""
    from llamaserve.models.hub import ModelFiles
    from llamaserve.settings import Settings

    weights, projector = qwen_files
    yield from app_with_failing_decode(monkeypatch, "qwen-vl", ModelFiles(weights, projector),
                                       Settings(ctx=CTX, threads=1, parallel=1))


def test_decode_failure_is_a_500_server_error_not_a_retry(
    failing_decode_app: tuple[Any, list[int]], caplog: pytest.LogCaptureFixture,
) -> None:
    client, fail_from = failing_decode_app
    fail_from[0] = 1
    body = {"model": "qwen-vl", "max_tokens": 4,
            "messages": [{"role": "user", "content": [text("Describe."), image(PNG_URI)]}]}
    with caplog.at_level(logging.ERROR, logger="llamaserve"):
        response = client.post("/v1/chat/completions", json=body)
    error = assert_openai_error(response, 500)
    assert error["type"] == "server_error" and error["code"] == "server_error"
    assert "retry" not in error["message"].lower()
    assert any("llama_decode returned 1" in r.getMessage() and "KV" in r.getMessage()
               for r in caplog.records)


def test_decode_failure_mid_stream_is_an_in_band_server_error(
    failing_decode_app: tuple[Any, list[int]],
) -> None:
    client, fail_from = failing_decode_app
    fail_from[0] = 4  # the prompt's text, then a few tokens are streamed first
    body = {"model": "qwen-vl", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "Describe a garden."}]}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    events = [json.loads(frame) for frame in frames[:-1]]
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events)
    error = events[-1]["error"]
    assert error["type"] == "server_error" and error["code"] == "server_error"
