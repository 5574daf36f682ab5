"""Chat templates are code from whoever made the GGUF: compiled and rendered here with limits.

`LimitedEnvironment` is Jinja's immutable sandbox plus a per-render `Budget`: a number of
steps (loop iterations, calls, filters, operators) and a wall-clock deadline, a size limit on
every value the template builds (checked before the operation, so nothing large is ever
allocated), a total of characters built and output, and a bound on call depth. Intercepting the
operators also stops Jinja folding `{{ 'x' * 300000000 }}` at compile time (`BinExpr.as_const`
gives up on intercepted operators in a sandbox), so loading never runs template code.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

from .template_limits import (
    TemplateLimitError,
    check_binop,
    check_brace_format,
    check_filter,
    check_method,
    size,
)
from .types import EngineError

MAX_TEMPLATE_CHARS = 1 << 20  # a GGUF's template; real ones are a few kB


@dataclass(frozen=True)
class Limits:
    """What one render may do; every limit grows with the size of the messages (a template's
    own work does: some walk message text character by character). Values built may be
    `value_chars` plus twice the messages; `total_chars` counts every value built and output,
    plus eight times the messages; steps and seconds grow by 10 and 0.1 ms per character."""

    steps: int = 1_000_000
    seconds: float = 5.0
    value_chars: int = 4 << 20
    total_chars: int = 64 << 20
    depth: int = 64


LIMITS = Limits()


class Budget:
    """What is left to one render (on the thread that renders)."""

    def __init__(self, limits: Limits, input_chars: int) -> None:
        self.steps = self.max_steps = limits.steps + 10 * input_chars
        self.seconds = limits.seconds + input_chars / 10_000
        self.deadline = time.monotonic() + self.seconds
        self.value_limit = limits.value_chars + 2 * input_chars
        self.chars = limits.total_chars + 8 * input_chars
        self.depth = limits.depth

    def step(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            raise TemplateLimitError(f"rendering took more than {self.max_steps:,} steps")
        if self.steps % 256 == 0 and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took more than {self.seconds:.3g} s")

    def charge(self, value: Any) -> Any:
        """Count a value the template built (or output) against the limits; returns it."""
        built = size(value)
        if built > self.value_limit:
            raise TemplateLimitError(
                f"the template built a value of {built:,} characters (the limit is "
                f"{self.value_limit:,})")
        self.spend(built)
        return value

    def spend(self, chars: int) -> None:
        self.chars -= chars
        if self.chars < 0:
            raise TemplateLimitError("the template built more text in total than it may")


class _Unlimited(Budget):
    """Outside a render (Jinja folding constants at compile time): sizes are still checked,
    nothing is counted."""

    def step(self, count: int = 1) -> None:
        pass

    def charge(self, value: Any) -> Any:
        if size(value) > self.value_limit:
            raise TemplateLimitError("value too large")
        return value

    def spend(self, chars: int) -> None:
        pass


_COMPILE_TIME = _Unlimited(LIMITS, 0)
_local = threading.local()


def budget() -> Budget:
    return getattr(_local, "budget", None) or _COMPILE_TIME


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so that every loop iteration and `~` concatenation passes
    through the environment's checks (Jinja calls neither hook for them)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 (Jinja's visitor names)
        node = self.generic_visit(node)
        # The text a loop's body outputs without any expression, charged per iteration.
        literal = sum(len(data.data) for data in node.find_all(nodes.TemplateData))
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [node.iter, nodes.Const(literal + 1)],
            [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        node = self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("bounded_concat"), node.nodes, [], None,
                          None, lineno=node.lineno)


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox chat templates render in (with the Transformers chat-template extensions)."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def __init__(self) -> None:
        super().__init__(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
            extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols], finalize=self._output)
        self.filters["tojson"] = tojson
        del self.globals["lipsum"]  # lipsum(n=10**9) writes a billion words
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bounded().visit(super()._parse(source, name, filename))

    @staticmethod
    def _output(value: Any) -> Any:
        return budget().charge(value if isinstance(value, str) else str(value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        current = budget()
        current.step()
        check_binop(operator, left, right, current.value_limit)
        return current.charge(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        current = budget()
        current.step()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (__self.bounded_iter(args[0], 1), *args[1:])
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if getattr(method, "__name__", "") in ("format", "format_map") and isinstance(
                getattr(method, "__self__", None), str):
            check_brace_format(method.__self__, current.value_limit)
        check_method(method, args, kwargs, current.value_limit)
        current.depth -= 1
        try:
            if current.depth < 0:
                raise TemplateLimitError("calls nested too deep (recursion?)")
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            current.depth += 1
        return current.charge(result)

    @staticmethod
    def bounded_iter(iterable: Iterable[Any], cost: int) -> Iterator[Any]:
        current = budget()
        for item in iterable:
            current.step()
            current.spend(cost)
            yield item

    @staticmethod
    def bounded_concat(*values: Any) -> str:
        parts = [str(value) for value in values]
        current = budget()
        total = sum(map(len, parts))
        if total > current.value_limit:
            raise TemplateLimitError(f"'~' would build {total:,} characters")
        return "".join(parts)


def _bounded_filter(name: str, function: Any) -> Any:
    offset = 1 if _PassArg.from_obj(function) is not None else 0  # environment/context first

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        current = budget()
        current.step()
        check_filter(name, args[offset:], kwargs, current.value_limit)
        return current.charge(function(*args, **kwargs))

    return bounded


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Hugging Face's `{% generation %}` chat-template tag."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
           separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Transformers' `tojson` (non-ASCII kept), with a sane indent."""
    if isinstance(indent, int) and indent > 16:
        raise TemplateLimitError("tojson's indent may be at most 16")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class ChatTemplateError(EngineError):
    """The model's chat template failed on a request: it raised, or went past its limits."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the model's chat template failed: {detail}", param="messages")


class TemplateRaised(Exception):
    """The template called raise_exception(message)."""


class TemplateCompileError(ValueError):
    """A chat template that is too large or does not compile (raised at load)."""


def compile_template(source: str) -> jinja2.Template:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateCompileError(
            f"its chat template has {len(source):,} characters (at most {MAX_TEMPLATE_CHARS:,})")
    try:
        return LimitedEnvironment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateCompileError(
            f"its chat template does not compile: {exc.message} (template line {exc.lineno})"
        ) from exc
    except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateCompileError(f"its chat template does not compile: {exc}") from exc


def render(template: jinja2.Template, variables: dict[str, Any], input_chars: int,
           limits: Limits = LIMITS) -> str:
    """Render under a fresh budget on this thread; TemplateLimitError past a limit, and
    whatever the template itself raises."""
    previous = getattr(_local, "budget", None)
    _local.budget = Budget(limits, input_chars)
    try:
        return template.render(variables)
    finally:
        _local.budget = previous


def strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@dataclass(frozen=True)
class Rendered:
    """What llama-cpp-python's formatters return, as far as ChatPrompter reads it."""

    prompt: str
    stop: list[str]
    added_special: bool = True


class LimitedChatFormatter:
    """The GGUF's Jinja chat template, compiled and rendered in the limited sandbox (what
    llama-cpp-python's Jinja2ChatFormatter does without limits)."""

    def __init__(self, template: str, eos_token: str, bos_token: str) -> None:
        self.template = compile_template(template)
        self.eos_token = eos_token
        self.bos_token = bos_token

    def __call__(self, *, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None = None, **options: Any) -> Rendered:
        def raise_exception(message: str) -> None:
            raise TemplateRaised(str(message))

        variables = {
            "add_generation_prompt": True, "functions": None, "function_call": None,
            "tool_choice": None, **options, "messages": messages, "tools": tools,
            "eos_token": self.eos_token, "bos_token": self.bos_token,
            "raise_exception": raise_exception, "strftime_now": strftime_now,
        }
        input_chars = len(json.dumps([messages, tools, options], default=str))
        prompt = render(self.template, variables, input_chars)
        return Rendered(prompt=prompt, stop=[self.eos_token])


def defer_llama_templates() -> None:
    """Stop `Llama()` compiling the GGUF's templates at load: llama-cpp-python builds a
    Jinja2ChatFormatter for each (in an unlimited environment, which folds `'x' * 300000000`
    at compile time and raises on a template that does not compile). llamaserve never uses
    those handlers; ChatPrompter compiles the template itself, with limits."""
    from llama_cpp import llama_chat_format

    if getattr(llama_chat_format.Jinja2ChatFormatter, "deferred", False):
        return

    class DeferredFormatter(llama_chat_format.Jinja2ChatFormatter):
        deferred = True

        def __init__(self, template: str, eos_token: str, bos_token: str,
                     *_: Any, **__: Any) -> None:
            self.template, self.eos_token, self.bos_token = template, eos_token, bos_token

        def __call__(self, **_: Any) -> Any:
            raise RuntimeError("llamaserve renders chat templates with ChatPrompter")

    llama_chat_format.Jinja2ChatFormatter = DeferredFormatter  # type: ignore[misc]
