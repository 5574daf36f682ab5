"""The exception → answer table (api/errors.py), without a server or a model."""

from __future__ import annotations

import asyncio

import pytest

from llamaserve.engine import (
    EngineBusyError,
    EngineError,
    EngineInternalError,
    PromptTooLongError,
)
from llamaserve.errors import ERRORS
from llamaserve.errors import request_error as api_error
from llamaserve.models.manager import (
    EmbeddingModelError,
    ModelBusyError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelNotFoundError,
    ModelTooLargeError,
    ModelUnavailableError,
)
from llamaserve.protocols.openai.errors import error_body, handle_mapped, in_band_error


@pytest.mark.parametrize(("exc", "status", "code", "param"), [
    (ModelNotFoundError("x", ["a"]), 404, "model_not_found", "model"),
    (ModelNotDownloadedError("run `llamaserve pull x`"), 404, "model_not_downloaded", "model"),
    (ModelTooLargeError("too large"), 503, "insufficient_memory", "model"),
    (ModelBusyError("busy"), 503, "model_busy", "model"),
    (ModelLoadError("broken.gguf"), 503, "model_load_failed", "model"),
    (ModelUnavailableError("files"), 503, "model_unavailable", "model"),
    (EmbeddingModelError("bge"), 400, "model_not_supported", "model"),
    (EngineBusyError("full", code="queue_full"), 503, "queue_full", None),
    (EngineInternalError("llama_decode failed"), 500, "server_error", None),
    (PromptTooLongError("too long", param="messages"), 400, "invalid_request", "messages"),
    (EngineError("bad"), 400, "invalid_request", None),
])
def test_each_exception_answers_its_status_code_and_param(exc: Exception, status: int,
                                                          code: str, param: str | None) -> None:
    error = api_error(exc)
    assert (error.status, error.code, error.param, error.message) == (status, code, param,
                                                                      str(exc))
    # in a stream, after the 200: the same body a plain answer carries
    assert in_band_error(exc) == error_body(status, str(exc), param, code)


def test_a_busy_engine_says_when_to_retry() -> None:
    busy = EngineBusyError("full", retry_after=3)
    response = asyncio.run(handle_mapped(None, busy))  # type: ignore[arg-type]
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"


def test_an_exception_outside_the_table_is_a_programming_error() -> None:
    assert KeyError not in ERRORS
    with pytest.raises(TypeError, match="not in llamaserve.errors.ERRORS"):
        api_error(KeyError("x"))
