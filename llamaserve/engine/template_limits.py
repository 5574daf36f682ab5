"""Size estimates and checks for what a chat template may build: the parts of the sandbox
(template.py) that need no Jinja. Every check runs *before* the operation, so a refused
operation never allocates; results are measured again afterwards (`size`)."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any


class TemplateLimitError(Exception):
    """A chat template went past one of its limits while rendering."""


# What one pointer in a list costs, in the same unit as one character of a string.
_POINTER = 8
_PERCENT_SPEC = re.compile(r"%[^%a-zA-Z]*")
_DIGITS = re.compile(r"\d+")


def size(value: Any) -> int:
    """Roughly the memory a value holds of its own, in characters."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return _POINTER * len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    return 0


def refuse(what: str, estimate: int, limit: int) -> None:
    if estimate > limit:
        raise TemplateLimitError(
            f"{what} would build a value of about {estimate:,} characters (the limit is "
            f"{limit:,})"
        )


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    """Refuse `left operator right` when its result would be larger than `limit`."""
    sequences = (str, bytes, list, tuple)
    if operator == "*":
        if isinstance(right, sequences):
            left, right = right, left
        if isinstance(left, sequences) and isinstance(right, int):
            refuse("'*'", size(left) * max(right, 0), limit)
        elif isinstance(left, int) and isinstance(right, int):
            refuse("'*'", (left.bit_length() + right.bit_length()) // 8, limit)
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        refuse("'+'", size(left) + size(right), limit)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and abs(left) > 1:
            refuse("'**'", right * left.bit_length() // 8, min(limit, 1 << 17))
    elif operator == "%" and isinstance(left, (str, bytes)):
        check_percent_format(left if isinstance(left, str) else left.decode("latin-1"), limit)


def check_percent_format(fmt: str, limit: int) -> None:
    """`fmt % values`: no `*` widths (taken from the values) and no widths over `limit`."""
    for spec in _PERCENT_SPEC.findall(fmt):
        if "*" in spec:
            raise TemplateLimitError("'*' widths in % formats are not allowed in chat templates")
        for digits in _DIGITS.findall(spec):
            refuse("a % format width", int(digits), limit)


def check_brace_format(fmt: str, limit: int) -> None:
    """`fmt.format(...)`: no nested fields in a format spec and no widths over `limit`."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, _name, spec, _conversion in fields:
        if spec and "{" in spec:
            raise TemplateLimitError("nested format fields are not allowed in chat templates")
        for digits in _DIGITS.findall(spec or ""):
            refuse("a format width", int(digits), limit)


def _replace_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, (str, bytes)) or not isinstance(new, (str, bytes)):
        return 0
    hits = (len(text) + 1) if not old else text.count(old) if isinstance(old, type(text)) else 0
    if _int(count, -1) >= 0:
        hits = min(hits, count)
    return len(text) + hits * len(new)


def _join_size(separator: Any, items: Any) -> int:
    if not isinstance(items, (list, tuple, str, dict, set, frozenset)):
        return 0
    parts = sum(len(str(item)) for item in items)
    return parts + max(len(items) - 1, 0) * len(str(separator))


def _pad_size(text: Any, width: Any = 0, *_: Any) -> int:
    return max(len(text), _int(width))


def _tabs_size(text: Any, tabsize: Any = 8) -> int:
    return len(text) + text.count("\t" if isinstance(text, str) else b"\t") * max(_int(tabsize), 0)


def _translate_size(text: Any, table: Any = None, *_: Any) -> int:
    if not isinstance(table, dict):
        return len(text)
    longest = max((size(value) for value in table.values()), default=1)
    return len(text) * max(longest, 1)


# Methods of str (and bytes) whose result can be far larger than the string: (self, *args).
METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": _pad_size,
    "ljust": _pad_size,
    "rjust": _pad_size,
    "zfill": _pad_size,
    "expandtabs": _tabs_size,
    "replace": _replace_size,
    "join": _join_size,
    "translate": _translate_size,
}


def check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> None:
    """Refuse a call of a str/bytes method whose result would be larger than `limit`."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, (str, bytes)) or name not in METHOD_SIZES:
        return
    try:
        estimate = METHOD_SIZES[name](owner, *args, **kwargs)
    except TypeError:
        return  # wrong arguments: the method raises its own TypeError
    refuse(f"str.{name}()", estimate, limit)


def _filter_indent(text: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    pad = len(width) if isinstance(width, str) else _int(width)
    return len(str(text)) + (str(text).count("\n") + 1) * pad


def _filter_wordwrap(text: Any, width: Any = 79, *args: Any, **kwargs: Any) -> int:
    wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    lines = len(str(text)) // max(_int(width, 79), 1) + 1
    return len(str(text)) + lines * len(str(wrap))


def _filter_count(_value: Any, count: Any = 0, *_: Any, **__: Any) -> int:
    return _POINTER * _int(count)


def _filter_join(value: Any, d: Any = "", attribute: Any = None) -> int:
    return 0 if attribute is not None else _join_size(d, value)


def _filter_format(value: Any, *_: Any, **__: Any) -> int:
    return 0  # checked by check_percent_format in FILTER_CHECKS


def _filter_sum(_iterable: Any, attribute: Any = None, start: Any = 0) -> int:
    if not isinstance(start, (int, float)):
        raise TemplateLimitError("sum() with a start that is not a number is not allowed")
    return 0


# Jinja filters whose result can be far larger than their input: (value, *args) → size.
FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: max(len(str(value)), _int(width)),
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "replace": lambda value, old, new, count=None: _replace_size(
        str(value), str(old), str(new), -1 if count is None else count),
    "join": _filter_join,
    "batch": _filter_count,
    "slice": _filter_count,
    "sum": _filter_sum,
    "format": _filter_format,
}


def check_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> None:
    """Refuse a Jinja filter call whose result would be larger than `limit`."""
    if name == "format" and args and isinstance(args[0], str):
        check_percent_format(args[0], limit)
    estimate = FILTER_SIZES.get(name)
    if estimate is None or not args:
        return
    try:
        refuse(f"the '{name}' filter", estimate(*args, **kwargs), limit)
    except TypeError:
        return  # wrong arguments: the filter raises its own error
