"""Large images cost bounded memory: a decompression bomb is a 400 in each protocol's shape,
never Pillow's DecompressionBombError as a 500; a request's pixels are capped; many large
images decode within a bounded peak of the server's memory and leave little of it held."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from PIL import Image

from .builders import data_uri, png_claiming
from .conftest import LiveServer, assert_openai_error, start_server

BOMB = png_claiming(30_000, 30_000)  # 900 million pixels claimed, 100 bytes sent
BOMB_MESSAGE = "30000x30000, 900000000 pixels; at most 40000000 are accepted"
MB = 1024 * 1024


def one_colour_png(side: int, mode: str = "RGB") -> bytes:
    """side x side of one colour: a large image in a small file (compresses ~1000:1)."""
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 90).save(buffer, "PNG")
    return buffer.getvalue()


def chat_with_images(server: LiveServer, uris: list[str]) -> httpx.Response:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe."}]
    content += [{"type": "image_url", "image_url": {"url": uri}} for uri in uris]
    body = {"model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{server.v1}chat/completions", json=body, timeout=600)


def test_decompression_bomb_is_a_400_in_chat(vision_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=vision_server.v1, api_key="KEY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="smollm2", max_tokens=1, messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Describe."},
                {"type": "image_url", "image_url": {"url": data_uri(BOMB)}}]}])
    error = assert_openai_error(raised.value.response, 400)
    assert error["param"] == "messages[0].content[1]" and error["code"] == "invalid_image"
    assert BOMB_MESSAGE in error["message"]


def test_decompression_bomb_is_a_400_in_responses(vision_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=vision_server.v1, api_key="KEY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="smollm2", max_output_tokens=16, input=[
            {"role": "user", "content": [
                {"type": "input_text", "text": "Describe."},
                {"type": "input_image", "image_url": data_uri(BOMB), "detail": "auto"}]}])
    error = assert_openai_error(raised.value.response, 400)
    assert error["param"] == "input[0].content[1]" and BOMB_MESSAGE in error["message"]


def test_decompression_bomb_is_a_400_in_messages(vision_server: LiveServer) -> None:
    client = anthropic.Anthropic(base_url=vision_server.base_url, api_key="KEY", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="smollm2", max_tokens=4, messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": base64.b64encode(BOMB).decode()}},
                {"type": "text", "text": "Describe."}]}])
    body = raised.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0" in body["error"]["message"]  # Anthropic's way of naming it
    assert BOMB_MESSAGE in body["error"]["message"]


def test_decompression_bomb_is_a_400_in_ollama_chat(vision_server: LiveServer) -> None:
    client = ollama.Client(host=vision_server.base_url, timeout=120)
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat("smollm2", [{"role": "user", "content": "Describe.", "images": [BOMB]}])
    assert raised.value.status_code == 400
    assert "messages[0].images[0]" in raised.value.error and BOMB_MESSAGE in raised.value.error


def test_pixels_of_one_request_are_capped_before_decoding(vision_server: LiveServer) -> None:
    # 8 images of 36 million pixels pass one by one, not together (256 million by default)
    uri = data_uri(one_colour_png(6000, mode="L"))
    started = time.monotonic()
    error = assert_openai_error(chat_with_images(vision_server, [uri] * 8), 400)
    assert time.monotonic() - started < 30  # refused from the headers, nothing decoded
    assert error["code"] == "too_many_image_pixels"
    assert error["param"] == "messages[0].content[8]"  # the 8th image passes the cap


def vm(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory,
                 projector_path: Path) -> Iterator[LiveServer]:
    """The vision server with no per-request pixel cap, so all 16 large images decode."""
    live = start_server(["smollm2", "--ctx", "1024", "--mmproj", str(projector_path)],
                        tmp_path_factory.mktemp("roomy"),
                        env={"LLAMASERVE_MAX_REQUEST_IMAGE_PIXELS": str(10**12)})
    yield live
    live.stop()


def test_sixteen_large_images_decode_in_bounded_memory(roomy_server: LiveServer) -> None:
    # The request: 16 PNGs of 6000x6000 (36 million pixels each) as data URIs. Decoded
    # all at full size they took the server from 0.9 to 7 GB, and 3.5 GB stayed held.
    uri = data_uri(one_colour_png(6000))
    pid = roomy_server.process.pid
    assert chat_with_images(roomy_server, [data_uri(one_colour_png(64))]).status_code == 200
    before = vm(pid)
    health: list[float] = []

    def probe() -> None:  # the event loop keeps answering while images decode
        while len(health) < 3:
            started = time.monotonic()
            httpx.get(f"{roomy_server.base_url}/health", timeout=60)
            health.append(time.monotonic() - started)
            time.sleep(0.5)

    prober = threading.Thread(target=probe)
    prober.start()
    response = chat_with_images(roomy_server, [uri] * 16)
    prober.join()
    after = vm(pid)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 16 * 16  # every image reached the model
    assert after["VmHWM"] - before["VmHWM"] < 1024 * MB
    assert after["VmRSS"] - before["VmRSS"] < 256 * MB
    assert max(health) < 5
