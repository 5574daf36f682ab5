"""The chat-template sandbox (engine/template.py) without a model: hostile templates end in
ChatTemplateError quickly and without allocating, real templates render exactly as in
llama-cpp-python's unlimited sandbox, and generated templates never raise anything else."""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

import jinja2
import jinja2.ext
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import llama_chat_format

from llamaserve.engine.prompt import ChatPrompter
from llamaserve.engine.template import (
    ChatTemplateError,
    LimitedChatFormatter,
    LimitedEnvironment,
    TemplateCompileError,
)

MESSAGES = [{"role": "user", "content": "hi"}]


class FakeLlama:
    """What ChatPrompter reads of a Llama: the template and the special tokens."""

    def __init__(self, template: str) -> None:
        self.metadata = {"tokenizer.chat_template": template}
        self._model = self

    def token_get_text(self, token: int) -> str:
        return {1: "<s>", 2: "</s>"}[token]

    def token_bos(self) -> int:
        return 1

    def token_eos(self) -> int:
        return 2


def render(template: str, messages: list[dict[str, Any]] = MESSAGES) -> str:
    return ChatPrompter(FakeLlama(template)).render(messages).text  # type: ignore[arg-type]


HOSTILE = {
    "nested range": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                    "{% endfor %}",
    "loop over a string": "{% set s = 'x' * 1000000 %}{% for a in s %}{% for b in s %}"
                          "{% endfor %}{% endfor %}",
    "multiply": "{{ 'x' * 300000000 }}",
    "list multiply": "{{ ([1] * 300000000)|length }}",
    "power": "{{ 10 ** 1000000000 }}",
    "float power": "{{ 10.0 ** 1000 }}",
    "divide": "{{ 1 // 0 }}",
    "modulo": "{{ 1 % 0 }}",
    "raise": "{{ raise_exception('roles must alternate') }}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive loop": "{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}",
    "doubling +": "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(40) %}"
                  "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "doubling ~": "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(40) %}"
                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "literal text in loops": "{% for i in range(100000) %}{% for j in range(100000) %}"
                             + "y" * 1000 + "{% endfor %}{% endfor %}",
    "output in a loop": "{% set big = 'x' * 1000000 %}{% for i in range(100000) %}{{ big }}"
                        "{% endfor %}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "str.join": "{% set big = 'x' * 1000000 %}{{ ''.join([big] * 500) }}",
    "str.replace": "{{ ('x' * 1000).replace('', 'y' * 100000) }}",
    "format width": "{{ '{:>1000000000}'.format(1) }}",
    "nested format width": "{{ '{:>{w}}'.format(1, w=1000000000) }}",
    "percent width": "{{ '%1000000000d' % 1 }}",
    "percent star": "{{ '%*d' % (1000000000, 1) }}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "indent filter": "{{ ('x\n' * 100000)|indent(100000) }}",
    "batch filter": "{{ [1]|batch(1000000000, 'x')|list|length }}",
    "join filter": "{% set big = 'x' * 1000000 %}{{ ([big] * 100000)|join }}",
    "format filter": "{{ '%1000000000s'|format('x') }}",
    "tojson indent": "{{ messages|tojson(indent=1000000000) }}",
    "undefined call": "{{ nothing_here() }}",
    "unsafe attribute": "{{ ''.__class__.__mro__ }}",
    "list mutation": "{% set l = [] %}{{ l.append(1) }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_is_a_chat_template_error(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as caught:
        render(template)
    assert time.monotonic() - started < 10
    assert str(caught.value).startswith("the model's chat template failed: ")
    assert caught.value.param == "messages"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1024 * 1024  # KiB: < 1 GiB


def test_literal_text_in_loops_over_the_messages_counts() -> None:
    """No call or expression in the loop: the body's own text is what is charged."""
    template = "{% for a in messages[0].content %}" + "y" * 1000 + "{% endfor %}"
    with pytest.raises(ChatTemplateError, match="more text in total"):
        render(template, [{"role": "user", "content": "x" * 100_000}])  # 100 MB of y


def test_constants_are_not_folded_at_compile_time() -> None:
    """Jinja folds constant expressions when it compiles; intercepted operators are not."""
    started = time.monotonic()
    LimitedChatFormatter("{{ 'x' * 300000000 }}{{ 'y'|center(300000000) }}", "", "")
    assert time.monotonic() - started < 1


def test_llama_no_longer_compiles_the_gguf_templates() -> None:
    import llamaserve.engine  # noqa: F401 (installs the deferral)

    formatter = llama_chat_format.Jinja2ChatFormatter("{% for %}", "", "")  # would not compile
    assert formatter.template == "{% for %}"


@pytest.mark.parametrize("template", ["{% for %}", "{{ x", "{% endif %}", "x" * (2 << 20)])
def test_template_that_does_not_compile_is_one_line(template: str) -> None:
    with pytest.raises(TemplateCompileError) as caught:
        ChatPrompter(FakeLlama(template))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def unlimited(template: str) -> jinja2.Template:
    """llama-cpp-python's environment for the GGUF's template, before this change."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, \
        sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                    separators=separators, sort_keys=sort_keys)
    return env.from_string(template)


# The multimodal handlers' templates (real ones, shipped with llama-cpp-python) and a
# Qwen2.5-style template with tools, tool calls and tool results.
REAL = {name: handler.CHAT_FORMAT for name, handler in vars(llama_chat_format).items()
        if isinstance(getattr(handler, "CHAT_FORMAT", None), str)}
REAL["qwen-tools"] = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- set ns = namespace(last=-1) %}{%- for m in messages[::-1] %}"
    "{%- set ns.last = ns.last + 1 %}{%- endfor %}"
    "{%- for message in messages %}{%- if message.role == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant' }}{%- for call in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' ~ call.function.name ~ '\", \"arguments\": ' }}"
    "{{- call.function.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}{%- elif message.role == 'tool' %}"
    "{%- if messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- else %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}"
    "{%- for part in message.content %}{{- part.text if part.type == 'text' else '<image>' }}"
    "{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' ~ ns.last|string }}"
    "{%- endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
CONVERSATIONS = [
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "é" * 5_000}],
    [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "warm"}],
    [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                  {"type": "image_url", "image_url": {"url": "data:,x"}}]}],
]


@pytest.mark.parametrize("template", REAL.values(), ids=REAL.keys())
def test_real_templates_render_as_before(template: str) -> None:
    ours = LimitedChatFormatter(template, "</s>", "<s>")
    before = unlimited(template)
    for messages in CONVERSATIONS:
        for tools in (None, TOOLS):
            expected = before.render(messages=messages, tools=tools, eos_token="</s>",
                                     bos_token="<s>", add_generation_prompt=True)
            assert ours(messages=messages, tools=tools).prompt == expected


# -- fuzzing: generated templates that raise or grow (issue 20, section 7) -------------------

numbers = st.one_of(st.integers(-3, 3), st.sampled_from([0, 10**9, -(10**9), 2**63, 10**100]),
                    st.floats(allow_nan=True, allow_infinity=True))
strings = st.sampled_from(["''", "'x'", "'%s'", "'{}'", "'%*d'", "'{:>{w}}'", "'\\t'",
                           "messages[0].content", "'x' * 1000"])
values = st.one_of(numbers.map(repr), strings, st.sampled_from(
    ["[1, 2]", "messages", "range(100000)", "none", "undefined_name", "{'a': 1}"]))
operators = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "~"])
filters = st.sampled_from(["center", "indent", "wordwrap", "batch", "slice", "join", "replace",
                           "format", "sum", "tojson", "list", "int", "round", "truncate",
                           "first", "length", "unique", "map"])
methods = st.sampled_from(["ljust", "center", "zfill", "expandtabs", "replace", "join", "format",
                           "split", "upper", "translate"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 4 if depth < 3 else 0))
    if kind == 0:
        return draw(values)
    inner = draw(expressions(depth + 1))
    other = draw(expressions(depth + 1))
    if kind == 1:
        return f"({inner} {draw(operators)} {other})"
    if kind == 2:
        return f"({inner}|{draw(filters)}({other}))"
    if kind == 3:
        return f"({inner}).{draw(methods)}({other})"
    return f"raise_exception({inner})"


@st.composite
def templates(draw: st.DrawFn) -> str:
    body = "".join(f"{{{{ {draw(expressions())} }}}}" for _ in range(draw(st.integers(1, 3))))
    if draw(st.booleans()):
        body = f"{{% for i in {draw(values)} %}}{body}{{% endfor %}}"
    if draw(st.booleans()):
        body = f"{{% macro m(n) %}}{body}{{{{ m(n) }}}}{{% endmacro %}}{{{{ m(1) }}}}"
    return body


@settings(max_examples=int(os.environ.get("LLAMASERVE_FUZZ_EXAMPLES", "300")), deadline=None,
          derandomize=not os.environ.get("LLAMASERVE_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow])
@given(template=templates())
def test_fuzz_generated_templates_render_or_fail_cleanly(template: str) -> None:
    """Whatever the template does, the prompter returns text or raises ChatTemplateError,
    quickly, and no value it builds is large."""
    started = time.monotonic()
    try:
        text = render(template)
    except ChatTemplateError as exc:
        assert str(exc).startswith("the model's chat template failed: ")
    else:
        assert len(text) < 80 << 20
    assert time.monotonic() - started < 10


def test_environment_refuses_unsafe_globals() -> None:
    assert "lipsum" not in LimitedEnvironment().globals
