"""Qwen2.5-VL (M-RoPE): an image takes more KV cells than positions, and every limit counts
cells. A tiny synthetic pair under the catalog's `qwen-vl` names, pulled from the fake Hub
and served by `llamaserve run qwen-vl`, as a user would."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .builders import data_uri, image_bytes, write_tiny_qwen25vl
from .conftest import assert_openai_error

CTX = 512  # per sequence: a generation without max_tokens reaches its end in about a second
# A 64x64 image is resized to 84x84: 6x6 patches of 14, merged 2x2 into 9 tokens that take 9
# KV cells but only 3 M-RoPE positions. mtmd wraps them in <|vision_start|>/<|vision_end|>.
IMAGE_TOKENS = 9
IMAGE_POSITIONS = 3
WRAPPED_IMAGE_TOKENS = IMAGE_TOKENS + 2
PNG = image_bytes("PNG", size=(64, 64))
PNG_URI = data_uri(PNG)


@pytest.fixture(scope="session")
def qwen_files(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny pair, under the file names the catalog's `qwen-vl` entry downloads."""
    from llamaserve.catalog import load_catalog

    spec = load_catalog().models["qwen-vl"]
    assert spec.projector is not None
    folder = tmp_path_factory.mktemp("qwen-vl-files")
    return write_tiny_qwen25vl(folder / spec.source.file, folder / spec.projector,  # type: ignore[union-attr]
                               smollm2_path, context=CTX)


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def image(url: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": url}



# -- a decode failure is the server's, never the client's --------------------------------------

@pytest.fixture
def failing_decode_app(qwen_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> Iterator[tuple[Any, list[int]]]:
    """The app in-process on the tiny pair, with llama_decode failing (returning 1, as for a
    full KV cache) from the call number set in the returned list on."""
    import llama_cpp
    from starlette.testclient import TestClient

    from llamaserve.catalog import load_catalog, resolve
    from llamaserve.cli import load_options, make_manager
    from llamaserve.hub import ModelFiles
    from llamaserve.server import create_app
    from llamaserve.settings import Settings

    weights, projector = qwen_files
    settings = Settings(ctx=CTX, threads=1, parallel=1)
    spec = resolve("qwen-vl", load_catalog())
    manager = make_manager(settings, keep_alive=-1)
    manager.add(spec, ModelFiles(weights=weights, projector=projector),
                load_options(settings, spec))
    manager.load_all()
    real_decode = llama_cpp.llama_decode
    fail_from = [10**9]
    calls = [0]

    def decode(ctx: Any, batch: Any) -> int:
        calls[0] += 1
        return 1 if calls[0] >= fail_from[0] else real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    with TestClient(create_app(manager, settings)) as client:
        yield client, fail_from


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
