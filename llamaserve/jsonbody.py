"""Request bodies as JSON, with the edges of Python's `json` closed: one loader for every
protocol, which renders its `BodyError` in its own shape.

Python's parser accepts what JSON does not (`NaN`, `Infinity`, lone UTF-16 surrogates such as
`"\\ud800"`, surrogates encoded in UTF-8 or UTF-16 bytes) and raises ValueError past its
integer-digit limit; each of these used to travel into a handler and end as a 500 (a
surrogate fails when the prompt is encoded for the tokenizer, an infinite float breaks a
timer). Here they are a 400 before any handler sees them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A JSON escape of a UTF-16 surrogate: the only way a surrogate gets into strictly decoded
# UTF-8 text, so bodies without one skip the walk over every string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """A body that is not the JSON we accept; the message says what is wrong."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large "
                        "for a 64-bit float")
    return value


def _constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON value")


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(raw: bytes) -> Any:
    """The parsed body; BodyError for anything that is not RFC 8259 JSON in UTF-8 (numbers
    beyond a 64-bit float or Python's integer-digit limit, NaN, lone surrogates, nesting
    deeper than the parser's recursion limit)."""
    try:
        text = raw.decode("utf-8")  # strict: no surrogates smuggled in as bytes, no UTF-16
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except BodyError:
        raise
    except RecursionError as exc:
        raise BodyError("the body nests arrays or objects too deeply") from exc
    except json.JSONDecodeError as exc:
        raise BodyError(str(exc)) from exc
    except ValueError as exc:  # Python's limit on the digits of an integer
        raise BodyError(f"a number in the body is too long ({exc})") from exc
    if _SURROGATE_ESCAPE.search(text) and _has_surrogate(value):
        raise BodyError("a string in the body holds a lone UTF-16 surrogate (\\ud800-\\udfff "
                        "not in a valid pair), which is not Unicode text")
    return value
