"""Every exception a request can meet → (status, code, param), in one table: `ERRORS`.

Handlers raise or let through what goes wrong and never pick a status for it; each protocol
renders the answer in its own error body (protocols/*/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .engine import ChatTemplateError, EngineBusyError, EngineError, EngineInternalError
from .models.errors import (
    EmbeddingModelError,
    ModelBusyError,
    ModelKindError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelNotFoundError,
    ModelNotNamedError,
    ModelTooLargeError,
    ModelUnavailableError,
)


class RequestError(Exception):
    """A request that cannot be served as asked: `status` (4xx), a message that says what to
    do, the field at fault (`param`, in the protocol's own spelling) and a machine `code`."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ErrorShape:
    """What an exception answers. `code` and `param` None: the exception's own attributes of
    that name (the engine names the field it refuses, and why it is busy)."""

    status: int
    code: str | None = None
    param: str | None = None


# Exception class → answer, found through the exception's class hierarchy (the most specific
# entry wins), for answers before a response starts and errors in a stream alike.
ERRORS: dict[type[Exception], ErrorShape] = {
    ModelNotFoundError: ErrorShape(404, "model_not_found", "model"),
    ModelNotDownloadedError: ErrorShape(404, "model_not_downloaded", "model"),
    ModelTooLargeError: ErrorShape(503, "insufficient_memory", "model"),  # over the budget
    ModelBusyError: ErrorShape(503, "model_busy", "model"),  # memory held by busy models
    ModelLoadError: ErrorShape(503, "model_load_failed", "model"),  # the others keep serving
    ModelUnavailableError: ErrorShape(503, "model_unavailable", "model"),
    EmbeddingModelError: ErrorShape(400, "model_not_supported", "model"),
    ModelKindError: ErrorShape(400, "model_not_supported", "model"),  # e.g. chat → rerank
    ModelNotNamedError: ErrorShape(400, "model_required", "model"),
    EngineBusyError: ErrorShape(503),  # no free sequence: retry (Retry-After)
    EngineInternalError: ErrorShape(500, "server_error"),  # llama.cpp failed: not the client
    ChatTemplateError: ErrorShape(400, "chat_template_error", "messages"),  # the GGUF's template
    EngineError: ErrorShape(400, "invalid_request"),  # a request the engine cannot run
    # text that is no Unicode (a lone surrogate) met when encoded for llama.cpp: the body
    # loader refuses it first, this is the net under any other way in
    UnicodeEncodeError: ErrorShape(400, "invalid_value"),
}


def shape_of(exc: Exception) -> ErrorShape | None:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def request_error(exc: Exception) -> RequestError:
    """The RequestError an exception of the table answers (the table says how)."""
    if isinstance(exc, RequestError):
        return exc
    shape = shape_of(exc)
    if shape is None:
        raise TypeError(f"{type(exc).__name__} is not in llamaserve.errors.ERRORS") from exc
    return RequestError(
        shape.status, str(exc),
        param=shape.param if shape.param is not None else getattr(exc, "param", None),
        code=shape.code if shape.code is not None else getattr(exc, "code", None),
    )


def is_known(exc: BaseException) -> bool:
    """Whether `exc` has an answer (else it is a bug: logged and answered 500 at the edge)."""
    return isinstance(exc, RequestError) or (isinstance(exc, Exception)
                                             and shape_of(exc) is not None)
