"""Generated image fields against the vision server, in each protocol that takes images:
malformed URLs and decompression bombs (PNG headers claiming any size, with a few bytes of
data) are a 400 in the protocol's own shape, never a 500, and the server keeps serving.
(tests/test_fuzz.py runs against the text-only server, where images are refused before they
are fetched or decoded.)"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .builders import data_uri, image_bytes, png_claiming
from .conftest import LiveServer

EXAMPLES = int(os.environ.get("LLAMASERVE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Malformed or unfetchable URLs that fail fast (no DNS, no connection that could hang).
malformed_urls = st.one_of(
    st.sampled_from([
        "http://[::1", "http://[", "http://", "https://", "ftp://x/a.png", "file:///etc/passwd",
        "http://x:99999/a.png", "http://x:-1/", "http://[::1]:0/", "http:///a.png", "//x/a.png",
        "http://127.0.0.1:1/a.png", "http://[fe80::1%25eth0]:1/", "http://0:1/", "\x00",
        "http://\ud800/", "data:", "data:image/png;base64,", "javascript:alert(1)",
    ]),
    st.builds(lambda scheme, rest: f"{scheme}{rest}",
              st.sampled_from(["http://", "https://", "http://[", "ftp://", ""]),
              st.text(alphabet="[]:%@/?#.0123456789abcdef\\ \t", max_size=20)),
)
# PNG headers claiming sizes from 0x0 to 2^31-1 squared: refused from the header, or opened
# and found truncated; real small images in between so some requests succeed.
bomb_bytes = st.one_of(
    st.builds(png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.builds(png_claiming, st.integers(0, 7000), st.integers(0, 7000)),
    st.builds(lambda data, cut: data[:cut], st.just(image_bytes("PNG")), st.integers(8, 120)),
    st.just(image_bytes("JPEG")),
)
image_fields = st.one_of(malformed_urls, bomb_bytes.map(data_uri))


@pytest.fixture(scope="module")
def http(vision_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vision_server.base_url, timeout=120) as client:
        yield client


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    # json.dumps escapes lone surrogates ("\ud800") as JSON allows; httpx's json= cannot
    response = http.post(path, content=json.dumps(body),
                         headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text[:500]
    assert response.status_code in (200, 400), response.text[:500]
    return response.status_code, response.json()


def check_openai(status: int, answer: Any) -> None:
    if status == 400:
        assert set(answer) == {"error"} and answer["error"]["message"], answer


@FUZZ
@given(url=image_fields)
def test_fuzz_chat_image_url(http: httpx.Client, url: str) -> None:
    check_openai(*post(http, "/v1/chat/completions", {"model": "smollm2", "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "image_url",
                                                   "image_url": {"url": url}}]}]}))


@FUZZ
@given(url=image_fields)
def test_fuzz_responses_input_image(http: httpx.Client, url: str) -> None:
    check_openai(*post(http, "/v1/responses", {"model": "smollm2", "max_output_tokens": 16,
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}))


@FUZZ
@given(source=st.one_of(
    bomb_bytes.map(lambda data: {"type": "base64", "media_type": "image/png",
                                 "data": base64.b64encode(data).decode()}),
    malformed_urls.map(lambda url: {"type": "url", "url": url})))
def test_fuzz_messages_image_block(http: httpx.Client, source: dict[str, str]) -> None:
    status, answer = post(http, "/v1/messages", {"model": "smollm2", "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]})
    if status == 400:
        assert answer["type"] == "error" and answer["error"]["message"], answer


@FUZZ
@given(data=bomb_bytes)
def test_fuzz_ollama_chat_images(http: httpx.Client, data: bytes) -> None:
    status, answer = post(http, "/api/chat", {"model": "smollm2", "stream": False,
        "options": {"num_predict": 1},
        "messages": [{"role": "user", "content": "Hi",
                      "images": [base64.b64encode(data).decode()]}]})
    if status == 400:
        assert list(answer) == ["error"] and answer["error"], answer


def test_server_still_answers_after_fuzzing(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
