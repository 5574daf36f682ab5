"""llama.cpp's own log lines, routed through Python's logging under the `llama.cpp` logger.

llama-cpp-python prints them to stderr by itself with a stale level table (ggml's WARN is 3,
which it reads as ERROR), so warnings such as the context-size and pooling ones of every
embedding context got through even with verbose=False. Routed here, they are debug
lines, shown with --verbose and in --log-format json's shape like every other line; llama.cpp's
errors stay errors.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

logger = logging.getLogger("llama.cpp")

_GGML_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_GGML_CONTINUE = 5
_pending: list[str] = []
_pending_level = [logging.DEBUG]


@llama_cpp.llama_log_callback
def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level != _GGML_CONTINUE:
        _pending_level[0] = logging.ERROR if level == _GGML_ERROR else logging.DEBUG
    _pending.append(text.decode("utf-8", errors="replace"))
    if _pending[-1].endswith("\n"):  # llama.cpp writes one line in several calls
        line = "".join(_pending).rstrip()
        _pending.clear()
        if line:
            logger.log(_pending_level[0], "%s", line)


def route_llama_logs() -> None:
    """Send llama.cpp's and mtmd's log lines to the `llama.cpp` logger (idempotent)."""
    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
    mtmd.mtmd_log_set(_log, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_log, ctypes.c_void_p(0))
