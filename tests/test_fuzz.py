"""Generated request bodies against the live server: every answer is a well-formed error in the
route's own protocol (OpenAI's on /v1, Anthropic's on /v1/messages, Ollama's on /api) or a
valid success, never a 500, and the server keeps serving.

CI runs a small number of examples per route; the full run is

    LLAMASERVE_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("LLAMASERVE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# JSON that Python's json.dumps cannot write, or writes as no JSON: each marker string is
# replaced in the encoded body by its raw token (`encode`).
RAW_TOKENS = {"\u2063int5000\u2063": "7" * 5000, "\u2063neg5000\u2063": "-" + "9" * 5000,
              "\u2063nan\u2063": "NaN", "\u2063inf\u2063": "-Infinity",
              "\u2063huge\u2063": "1e400"}
# Strings no Unicode text holds (lone UTF-16 surrogates), and URLs that do not parse
ODD_STRINGS = ["\ud800", "a\udfffb", "\udc00\ud800", "http://[::1", "http://[::1]:99999/x"]


def text(max_size: int) -> st.SearchStrategy[str]:
    """Text, sometimes one of ODD_STRINGS (hypothesis's text has no lone surrogates)."""
    return st.one_of(st.text(max_size=max_size), st.sampled_from(ODD_STRINGS))


def encode(body: object) -> bytes:
    raw = json.dumps(body)  # ensure_ascii: surrogates travel as \ud800 escapes, as clients send
    for marker, token in RAW_TOKENS.items():
        raw = raw.replace(json.dumps(marker), token)
    return raw.encode()


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False),
    text(40), st.sampled_from(["", "smollm2", "\u0000", "🦙" * 5, "data:,x", *RAW_TOKENS]),
)
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text(max_size=8), inner, max_size=4)),
    max_leaves=12)
small_tokens = st.one_of(st.integers(-3, 6), st.just(10**12), anything)

text_part = st.fixed_dictionaries({"type": st.just("text"), "text": text(max_size=30)})
image_part = st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
    text(max_size=30), st.fixed_dictionaries({"url": st.sampled_from(
        ["data:image/png;base64,@@@", "data:image/png;base64,iVBORw0KGgo=", "http://[::1",
         "ftp://x", "not a url"])}))})
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "developer",
                                        "function"]), anything),
     "content": st.one_of(text(max_size=60), st.lists(st.one_of(text_part, image_part,
                                                                    anything), max_size=3),
                          anything)},
    optional={"name": anything, "tool_call_id": anything, "tool_calls": anything,
              "reasoning_content": anything, "reasoning": anything},
)
# never 0 (each request would reload the model)
KEEP_ALIVES = st.sampled_from(["-5m", -1, "soon", True, [1], None, "nan", "NaN", "inf", "-inf",
                               "\u2063nan\u2063", "\u2063inf\u2063", "1e400", 1e300])
sampling = {
    "temperature": st.one_of(st.floats(-1, 3), anything), "top_p": anything,
    "n": st.one_of(st.integers(-1, 3), anything), "stop": anything, "seed": anything,
    "stream": st.booleans(), "logit_bias": anything, "presence_penalty": anything,
    "frequency_penalty": anything, "user": anything, "top_k": anything, "min_p": anything,
    "grammar": st.one_of(text(max_size=30), st.just('root ::= "a"')),
    "stream_options": anything, "keep_alive": KEEP_ALIVES,
}
chat_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything), "max_tokens": small_tokens},
    optional={"messages": st.one_of(st.lists(message, max_size=3), anything),
              "logprobs": anything, "top_logprobs": anything, "tools": anything,
              "tool_choice": anything, "response_format": st.one_of(anything, st.just(
                  {"type": "json_schema", "json_schema": {"schema": {"type": "integer"}}})),
              "functions": anything, "function_call": anything, "reasoning_effort": anything,
              **sampling},
)
completion_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything), "max_tokens": small_tokens},
    optional={"prompt": st.one_of(text(max_size=40), st.lists(st.integers(-2, 60000),
                                                                  max_size=5), anything),
              "echo": anything, "logprobs": anything, "best_of": anything, "suffix": anything,
              **sampling},
)

embedding_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything)},
    optional={"input": st.one_of(text(max_size=40), st.lists(text(max_size=20),
                                                                 max_size=4),
                                 st.lists(st.integers(-2, 60000), max_size=5), anything),
              "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), anything),
              "dimensions": st.one_of(st.integers(-2, 2000), anything), "user": anything},
)

# Anthropic's Messages API: its content blocks, tools and choices, each field sometimes junk
image_source = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.sampled_from(
        ["image/png", "image/jpeg", "image/bmp"]), "data": st.sampled_from(
        ["@@@", "iVBORw0KGgo=", ""])}),
    st.fixed_dictionaries({"type": st.just("url"), "url": st.sampled_from(
        ["http://[::1", "ftp://x", "not a url", "data:,x"])}),
    anything)
blocks = st.one_of(
    text_part,
    st.fixed_dictionaries({"type": st.just("image"), "source": image_source}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": text(max_size=8),
                           "name": text(max_size=8), "input": anything}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": anything},
                          optional={"content": anything, "is_error": anything}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": anything}),
    anything)
anthropic_message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "assistant", "system"]), anything),
     "content": st.one_of(text(max_size=60), st.lists(blocks, max_size=3), anything)})
anthropic_tool = st.one_of(st.fixed_dictionaries(
    {"name": st.one_of(st.just("f"), anything), "input_schema": st.one_of(
        st.just({"type": "object", "properties": {"a": {"type": "integer"}}}), anything)},
    optional={"description": anything, "type": anything}), anything)
anthropic_fields = {
    "system": st.one_of(text(max_size=30), st.lists(text_part, max_size=2), anything),
    "tools": st.one_of(st.lists(anthropic_tool, max_size=2), anything),
    "tool_choice": st.one_of(st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "tool", "none"])},
        optional={"name": anything, "disable_parallel_tool_use": anything}), anything),
    "thinking": anything, "output_config": anything,
}
messages_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything),
     "messages": st.one_of(st.lists(anthropic_message, min_size=1, max_size=3), anything)},
    optional={"max_tokens": small_tokens, "stop_sequences": anything, "stream": st.booleans(),
              "temperature": st.one_of(st.floats(-1, 3), anything), "top_p": anything,
              "top_k": anything, "metadata": anything, **anthropic_fields},
)
count_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything),
     "messages": st.one_of(st.lists(anthropic_message, min_size=1, max_size=3), anything)},
    optional=anthropic_fields,
)
ANTHROPIC_ERRORS = {"invalid_request_error", "authentication_error", "permission_error",
                    "not_found_error", "request_too_large", "rate_limit_error", "api_error",
                    "overloaded_error"}


def check_anthropic(response: httpx.Response, payload: bytes) -> None:
    """Each route answers in its own protocol's shape: these are Anthropic's."""
    if response.status_code >= 400:
        body = json.loads(payload)
        assert body["type"] == "error" and body["error"]["type"] in ANTHROPIC_ERRORS, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        frames = [frame for frame in payload.decode().split("\n\n") if frame]
        for frame in frames:
            name, data = frame.split("\n")
            assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
        assert frames[-1].startswith(("event: message_stop", "event: error")), frames[-1]
    else:
        answer = json.loads(payload)
        assert answer.get("type") == "message" or "input_tokens" in answer, answer

# llama-server's own routes (protocols/llamacpp)
token_ids = st.lists(st.one_of(st.integers(-2, 60000), st.just(2**63)), max_size=5)
tokenize_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.just("smollm2"), anything),
    "content": st.one_of(text(max_size=40), st.lists(st.one_of(text(max_size=10),
                                                                  st.integers(-2, 60000)),
                                                        max_size=4), anything),
    "add_special": anything, "parse_special": anything, "with_pieces": anything})
detokenize_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.just("smollm2"), anything), "tokens": st.one_of(token_ids, anything)})
rerank_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.just("smollm2"), anything), "query": st.one_of(text(max_size=20),
                                                                         anything),
    "documents": st.one_of(st.lists(st.one_of(text(max_size=20), st.fixed_dictionaries(
        {"text": text(max_size=20)})), max_size=3), anything),
    "top_n": anything, "return_documents": anything, "raw_scores": anything})


# Ollama's API: `num_predict` is always small here, as -1 or a missing one generates until the
# context is full; no keep_alive 0 either (each request would reload the model).
ollama_options = st.fixed_dictionaries(
    {"num_predict": st.one_of(st.integers(1, 6), st.just(10**12), text(max_size=3))},
    optional={"temperature": anything, "top_k": anything, "top_p": anything, "seed": anything,
              "stop": anything, "num_ctx": st.one_of(st.integers(-1, 5000), anything),
              "mirostat": anything, "repeat_penalty": anything, "made_up": anything},
)
ollama_message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), anything),
     "content": st.one_of(text(max_size=60), anything)},
    optional={"images": st.one_of(st.lists(st.sampled_from(
        ["iVBORw0KGgo=", "R0lGODlh", "@@@", "", "data:image/png;base64,x"]), max_size=2),
        anything),
        "tool_calls": anything, "tool_name": anything, "thinking": anything},
)
ollama_common = {"format": st.one_of(anything, st.just("json"),
                                     st.just({"type": "integer"})),
                 "stream": st.one_of(st.booleans(), anything),
                 "keep_alive": KEEP_ALIVES,
                 "think": anything, "logprobs": anything, "top_logprobs": anything}
ollama_chat_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["smollm2", "smollm2:latest", "smollm2:q4_1"]),
                        anything), "options": ollama_options},
    optional={"messages": st.one_of(st.lists(ollama_message, max_size=3), anything),
              "tools": anything, **ollama_common},
)
ollama_generate_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything), "options": ollama_options},
    optional={"prompt": st.one_of(text(max_size=40), anything), "suffix": anything,
              "system": anything, "template": anything, "raw": anything, "images": anything,
              "context": anything, **ollama_common},
)
ollama_embed_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything)},
    optional={"input": st.one_of(text(max_size=40), st.lists(text(max_size=20),
                                                                 max_size=3), anything),
              "truncate": anything, "dimensions": anything, "prompt": anything,
              "options": anything, "keep_alive": KEEP_ALIVES},
)
OLLAMA_ROUTES = [("POST", "/api/chat"), ("POST", "/api/generate"), ("POST", "/api/embed"),
                 ("POST", "/api/embeddings"), ("POST", "/api/show"), ("POST", "/api/pull"),
                 ("DELETE", "/api/delete"), ("POST", "/api/copy"), ("POST", "/api/create")]


def check_ollama(http: httpx.Client, method: str, path: str, body: object) -> None:
    """Never a 500; errors are `{"error": "..."}`; a stream is JSON lines ending with the
    `done` line or an error line."""
    with http.stream(method, path, content=encode(body),
                     headers={"Content-Type": "application/json"}) as response:
        payload = response.read()
    # /api/create answers 501 Not Implemented, whatever the body, in Ollama's shape
    assert response.status_code < 500 or (path, response.status_code) == ("/api/create", 501), \
        payload[:500]
    if response.status_code >= 400:
        error = json.loads(payload)
        assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]
    elif response.headers["content-type"].startswith("application/x-ndjson"):
        lines = [json.loads(line) for line in payload.splitlines()]
        assert lines and (lines[-1].get("done") is True or "error" in lines[-1]
                          or lines[-1].get("status") == "success"), lines[-1]
    elif payload:
        assert isinstance(json.loads(payload), dict)


@FUZZ
@given(body=ollama_chat_bodies)
def test_fuzz_ollama_chat(http: httpx.Client, body: dict) -> None:
    check_ollama(http, "POST", "/api/chat", body)


@FUZZ
@given(body=ollama_generate_bodies)
def test_fuzz_ollama_generate(http: httpx.Client, body: dict) -> None:
    check_ollama(http, "POST", "/api/generate", body)


@FUZZ
@given(body=ollama_embed_bodies)
def test_fuzz_ollama_embed(http: httpx.Client, body: dict) -> None:
    check_ollama(http, "POST", "/api/embed", body)
    check_ollama(http, "POST", "/api/embeddings", body)


@FUZZ
@given(body=anything)
def test_fuzz_any_json_on_every_ollama_route(http: httpx.Client, body: object) -> None:
    for method, path in OLLAMA_ROUTES:
        check_ollama(http, method, path, body)


input_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": text(max_size=30)}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.sampled_from(
        ["data:image/png;base64,@@@", "http://[::1", "not a url"])}),
    anything)
response_item = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system",
                                                    "developer"]),
                           "content": st.one_of(text(max_size=40),
                                                st.lists(input_part, max_size=3))}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": anything,
                           "name": anything, "arguments": anything}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": anything,
                           "output": anything}),
    anything)
responses_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), anything),
     "max_output_tokens": st.one_of(st.integers(-1, 6), anything)},
    optional={"input": st.one_of(text(max_size=40), st.lists(response_item, max_size=3),
                                 anything),
              "instructions": anything, "tools": st.one_of(anything, st.just(
                  [{"type": "function", "name": "f", "parameters": {"type": "object"}}])),
              "tool_choice": st.one_of(anything, st.sampled_from(
                  ["auto", "none", "required", {"type": "function", "name": "f"}])),
              "text": st.one_of(anything, st.just({"format": {
                  "type": "json_schema", "name": "x", "schema": {"type": "integer"}}})),
              "previous_response_id": anything, "store": anything, "stream": st.booleans(),
              "temperature": anything, "top_p": anything, "metadata": anything,
              "include": anything, "top_logprobs": anything, "reasoning": anything,
              "parallel_tool_calls": anything, "truncation": anything, "user": anything},
)


def check(http: httpx.Client, path: str, body: object) -> None:
    with http.stream("POST", path, content=encode(body),
                     headers={"Content-Type": "application/json"}) as response:
        payload = response.read()
    assert response.status_code < 500, payload[:500]
    if path.startswith("/v1/messages"):
        check_anthropic(response, payload)
    elif response.status_code >= 400:
        error = json.loads(payload)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    elif path.endswith("responses") and response.headers["content-type"].startswith(
            "text/event-stream"):  # typed events, no [DONE]: the last is the terminal one
        frames = [frame for frame in payload.decode().split("\n\n") if frame]
        last = json.loads(frames[-1].split("\ndata: ", 1)[1])
        assert last["type"] in ("response.completed", "response.incomplete", "response.failed")
    elif path.endswith("responses"):
        assert json.loads(payload)["object"] == "response"
    elif response.headers["content-type"].startswith("text/event-stream"):
        frames = [line for line in payload.decode().split("\n\n") if line]
        assert frames[-1] == "data: [DONE]"
        for frame in frames[:-1]:
            json.loads(frame.removeprefix("data: "))
    elif path.endswith(("embeddings", "rerank")):
        assert json.loads(payload)["object"] == "list"
    elif path.endswith("tokenize"):
        assert set(json.loads(payload)) in ({"tokens"}, {"content"})
    else:
        assert json.loads(payload)["choices"] is not None


@FUZZ
@given(body=chat_bodies)
def test_fuzz_chat_completions(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/chat/completions", body)


@FUZZ
@given(body=completion_bodies)
def test_fuzz_completions(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/completions", body)


@FUZZ
@given(body=embedding_bodies)
def test_fuzz_embeddings(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/embeddings", body)


@FUZZ
@given(body=tokenize_bodies)
def test_fuzz_tokenize(http: httpx.Client, body: dict) -> None:
    check(http, "/tokenize", body)


@FUZZ
@given(body=detokenize_bodies)
def test_fuzz_detokenize(http: httpx.Client, body: dict) -> None:
    check(http, "/detokenize", body)


@FUZZ
@given(body=rerank_bodies)
def test_fuzz_rerank(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/rerank", body)


@FUZZ
@given(body=messages_bodies)
def test_fuzz_messages(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/messages", body)


@FUZZ
@given(body=count_bodies)
def test_fuzz_count_tokens(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/messages/count_tokens", body)


@FUZZ
@given(body=responses_bodies)
def test_fuzz_responses(http: httpx.Client, body: dict) -> None:
    check(http, "/v1/responses", body)


ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
          "/v1/messages", "/v1/messages/count_tokens", "/tokenize", "/detokenize", "/v1/rerank")


@FUZZ
@given(body=anything)
def test_fuzz_any_json_on_every_route(http: httpx.Client, body: object) -> None:
    for path in ROUTES:
        check(http, path, body)


MALFORMED = [b"", b"{", b"\xff\xfe", b"null", b"[]" * 1000, b'"x"', b"{" * 5000 + b"}" * 5000,
             b"[" * 100000 + b"]" * 100000, b'{"model": "smollm2", "n": ' + b"1" * 5000 + b"}",
             b'{"model": "smollm2", "temperature": NaN}', b'{"model": "\\ud800"}',
             b'{"model": "\xed\xa0\x80"}', '{"model": "smollm2"}'.encode("utf-16"),
             b'{"model": "smollm2", "top_p": 1e999}']


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_bodies(http: httpx.Client, raw: bytes) -> None:
    for path in ROUTES:
        response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500
        error = response.json()["error"]
        if path.startswith("/v1/messages"):
            assert set(error) == {"type", "message"} and error["type"] == "invalid_request_error"
        else:
            assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_bodies_on_ollama_routes(http: httpx.Client, raw: bytes) -> None:
    for method, path in OLLAMA_ROUTES:
        response = http.request(method, path, content=raw)
        assert 400 <= response.status_code < 500 or (path, response.status_code) == (
            "/api/create", 501), (path, response.text)
        assert list(response.json()) == ["error"]


def test_server_still_answers_after_fuzzing(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={
        "model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200
