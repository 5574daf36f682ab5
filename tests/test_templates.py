"""Chat templates are untrusted input (issue 20, section 2): a GGUF whose template loops for
ever, builds 300 MB strings, divides by zero, raises or recurses loads quickly and answers
those requests 400 in each protocol's shape, and keeps serving; a template that does not
compile, or a header of arrays nested 5,000 deep, stops `run` with one line naming the file.

One server serves a SmolLM2 copy whose template picks its failure from the last message (and
renders normally otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import LiveServer, start_server
from .gguf_patch import copy_with_template, write_nested_arrays
from .test_fuzz import check, check_ollama

HOSTILE_TEMPLATE = (
    "{% macro deeper(n) %}{{ deeper(n + 1) }}{% endmacro %}"
    "{% set last = messages[-1]['content'] %}"
    "{% if last == 'loop' %}"
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% elif last == 'multiply' %}{{ 'x' * 300000000 }}"
    "{% elif last == 'divide' %}{{ 1 // 0 }}"
    "{% elif last == 'raise' %}{{ raise_exception('roles must alternate') }}"
    "{% elif last == 'recurse' %}{{ deeper(0) }}"
    "{% else %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def hostile(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[LiveServer, float]]:
    """The server, and how long it took to become ready."""
    tmp = tmp_path_factory.mktemp("templates")
    model = copy_with_template(smollm2_path, tmp / "hostile.gguf", HOSTILE_TEMPLATE)
    started = time.monotonic()
    live = start_server([str(model), "--ctx", "512"], tmp)
    yield live, time.monotonic() - started
    live.stop()


@pytest.fixture(scope="module")
def server(hostile: tuple[LiveServer, float]) -> LiveServer:
    return hostile[0]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_loading_never_runs_the_template(hostile: tuple[LiveServer, float]) -> None:
    """`{{ 'x' * 300000000 }}` used to be folded at compile time: 61 s and 1.7 GB to load."""
    live, seconds = hostile
    assert seconds < 40, seconds
    assert peak_rss(live.process.pid) < 800 * 1024 * 1024


def chat(server: LiveServer, content: str) -> None:
    openai.OpenAI(base_url=server.v1, api_key="KEY", max_retries=0, timeout=60).chat.completions \
        .create(model="hostile", messages=[{"role": "user", "content": content}], max_tokens=3)


def test_endless_loop_is_a_prompt_400_and_the_model_keeps_serving(server: LiveServer) -> None:
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server, "loop")
    assert time.monotonic() - started < 10
    assert caught.value.code == "chat_template_error"
    assert "steps" in openai_message(caught.value)
    chat(server, "hello")  # the same model's prompt thread is free again
    assert peak_rss(server.process.pid) < 800 * 1024 * 1024


def openai_message(error: openai.APIStatusError) -> str:
    """The error's own message (the SDK's `message` prefixes the status and the body)."""
    assert isinstance(error.body, dict), error.body
    assert error.body["type"] == "invalid_request_error"
    return str(error.body["message"])


def openai_chat(server: LiveServer, content: str) -> str:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server, content)
    assert caught.value.code == "chat_template_error"
    assert caught.value.param == "messages"
    return openai_message(caught.value)


def openai_stream(server: LiveServer, content: str) -> str:
    client = openai.OpenAI(base_url=server.v1, api_key="KEY", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="hostile", stream=True, max_tokens=3,
                                       messages=[{"role": "user", "content": content}])
    return openai_message(caught.value)


def responses(server: LiveServer, content: str) -> str:
    client = openai.OpenAI(base_url=server.v1, api_key="KEY", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="hostile", input=content, max_output_tokens=16)
    return openai_message(caught.value)


def messages(server: LiveServer, content: str) -> str:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="KEY", max_retries=0,
                                 timeout=60)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="hostile", max_tokens=3,
                               messages=[{"role": "user", "content": content}])
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def ollama_chat(server: LiveServer, content: str) -> str:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=server.base_url, timeout=60).chat(
            model="hostile", messages=[{"role": "user", "content": content}],
            options={"num_predict": 3})
    assert caught.value.status_code == 400
    return caught.value.error


@pytest.mark.parametrize("content, says", [
    ("multiply", "300,000,000 characters"),
    ("divide", "ZeroDivisionError"),
    ("raise", "roles must alternate"),
    ("recurse", "nested too deep"),
])
@pytest.mark.parametrize("protocol", [openai_chat, openai_stream, responses, messages,
                                      ollama_chat])
def test_failing_template_is_a_400_in_the_protocols_shape(
    server: LiveServer, protocol: Callable[[LiveServer, str], str], content: str, says: str
) -> None:
    message = protocol(server, content)
    assert message.startswith("the model's chat template failed: ")
    assert says in message


def test_server_log_has_no_traceback(server: LiveServer) -> None:
    chat(server, "hello")
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert "Traceback" not in server.log()


def run_fails(model: Path) -> str:
    """`llamaserve run MODEL`: exits non-zero with one error line naming the file."""
    result = subprocess.run([sys.executable, "-m", "llamaserve", "run", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert str(model) in errors[0]
    return errors[0]


def test_template_that_does_not_compile_stops_run(smollm2_path: Path, tmp_path: Path) -> None:
    broken = copy_with_template(smollm2_path, tmp_path / "broken.gguf",
                                "{% for m in messages %}{{ m.content ")
    assert "chat template does not compile" in run_fails(broken)


def test_header_of_arrays_nested_5000_deep_stops_run(tmp_path: Path) -> None:
    nested = write_nested_arrays(tmp_path / "nested.gguf", 5000)
    assert "array of arrays" in run_fails(nested)


# -- fuzzing (issue 20, section 7): every route that renders a chat template, with contents
# that make the template raise, loop or grow, mixed with ordinary ones: never a 500.

TRIGGERS = st.one_of(st.sampled_from(["loop", "multiply", "divide", "raise", "recurse"]),
                     st.text(max_size=20))
conversation = st.lists(TRIGGERS, min_size=1, max_size=3).map(
    lambda contents: [{"role": "user", "content": content} for content in contents])
ROUTE_BODIES = {
    "/v1/chat/completions": st.fixed_dictionaries({
        "model": st.just("hostile"), "messages": conversation, "max_tokens": st.just(3),
        "stream": st.booleans()}),
    "/v1/messages": st.fixed_dictionaries({
        "model": st.just("hostile"), "messages": conversation, "max_tokens": st.just(3),
        "stream": st.booleans()}),
    "/v1/responses": st.fixed_dictionaries({
        "model": st.just("hostile"), "input": TRIGGERS, "max_output_tokens": st.just(16),
        "stream": st.booleans()}),
    "/api/chat": st.fixed_dictionaries({
        "model": st.just("hostile"), "messages": conversation, "stream": st.booleans(),
        "options": st.just({"num_predict": 3})}),
    "/api/generate": st.fixed_dictionaries({
        "model": st.just("hostile"), "prompt": TRIGGERS, "stream": st.booleans(),
        "options": st.just({"num_predict": 3})}),
}


@pytest.fixture(scope="module")
def raw(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("path", ROUTE_BODIES)
def test_fuzz_templates_that_raise(raw: httpx.Client, path: str) -> None:
    @settings(max_examples=int(os.environ.get("LLAMASERVE_FUZZ_EXAMPLES", "20")),
              deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=ROUTE_BODIES[path])
    def fuzz(body: dict) -> None:
        if path.startswith("/api/"):
            check_ollama(raw, "POST", path, body)
        else:
            check(raw, path, body)

    fuzz()
    assert raw.get("/health").status_code == 200
