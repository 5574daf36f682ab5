"""Safe by default: web pages cannot drive the local server (Host check, JSON-only bodies from
browsers), a key file without keys refuses to start, keep_alive is a finite duration, bodies
that are not JSON's text (lone surrogates, numbers past Python's limits) are 400s, trailing
slashes answer everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from llamaserve import jsonbody
from llamaserve.cli import main
from llamaserve.crosssite import CrossSiteMiddleware, host_allowed
from llamaserve.models.manager import Limits, ModelManager
from llamaserve.server import create_app
from llamaserve.settings import Settings, parse_duration

from .conftest import LiveServer

HI = [{"role": "user", "content": "Hi"}]
BROWSER = {"Origin": "https://evil.example", "Sec-Fetch-Mode": "no-cors",
           "Content-Type": "text/plain;charset=UTF-8"}
# one route of each protocol, with a body it answers quickly
ROUTES = [
    ("/v1/chat/completions", {"model": "smollm2", "max_tokens": 1, "messages": HI}),
    ("/v1/messages", {"model": "smollm2", "max_tokens": 1, "messages": HI}),
    ("/api/chat", {"model": "smollm2", "stream": False, "messages": HI,
                   "options": {"num_predict": 1}}),
    ("/tokenize", {"model": "smollm2", "content": "Hi"}),
]


def assert_error_shape(path: str, response: httpx.Response, status: int) -> str:
    """The error is in the route's protocol's shape; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"], body
        return str(body["error"]["message"])
    if path.startswith("/api/"):
        assert list(body) == ["error"], body
        return str(body["error"])
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return str(body["error"]["message"])


# Cross-site requests

@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_foreign_host_is_refused(http: httpx.Client, path: str, body: dict) -> None:
    """DNS rebinding: the page's own name resolves to 127.0.0.1; Host still names it."""
    response = http.post(path, json=body, headers={"Host": "attacker.example:8000"})
    assert "attacker.example" in assert_error_shape(path, response, 403)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:1", "[::1]:8000",
                                  "app.localhost", "printer.local", "box.internal"])
def test_local_hosts_are_answered(http: httpx.Client, host: str) -> None:
    assert http.get("/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_browser_simple_request_is_415(http: httpx.Client, path: str, body: dict) -> None:
    """text/plain from a page needs no CORS preflight: it must not run the model."""
    response = http.post(path, content=json.dumps(body), headers=BROWSER)
    assert_error_shape(path, response, 415)
    without_type = {"Origin": "null"}  # a Blob body without a type sends no Content-Type
    assert_error_shape(path, http.post(path, content=json.dumps(body), headers=without_type),
                       415)


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_curl_without_a_json_content_type_still_works(http: httpx.Client, path: str,
                                                      body: dict) -> None:
    """`curl -d` sends application/x-www-form-urlencoded, as Ollama's own docs use it."""
    response = http.post(path, content=json.dumps(body),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    browser_json = {"Origin": "http://127.0.0.1", "Content-Type": "application/json"}
    assert http.post(path, content=json.dumps(body), headers=browser_json).status_code == 200


def tiny_app(bind: str, allowed: list[str]) -> TestClient:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/v1/x", ok, methods=["GET", "POST"])])
    return TestClient(CrossSiteMiddleware(app, bind, allowed))


def test_allowed_host_names_are_answered() -> None:
    client = tiny_app("127.0.0.1", ["llm.example.com"])
    assert client.get("/v1/x", headers={"Host": "llm.example.com:8000"}).status_code == 200
    assert client.get("/v1/x", headers={"Host": "other.example.com"}).status_code == 403
    assert tiny_app("::1", ["*"]).get("/v1/x", headers={"Host": "a.b"}).status_code == 200


def test_a_server_bound_beyond_loopback_answers_any_host() -> None:
    """As Ollama: bound to 0.0.0.0 or a LAN address, the names it is reached by are many."""
    for bind in ("0.0.0.0", "192.168.1.5", "::"):
        assert tiny_app(bind, []).get("/v1/x", headers={"Host": "a.b"}).status_code == 200


def test_host_rule() -> None:
    extra = frozenset({"llm.example.com"})
    for host in ["", "localhost", "127.0.0.2", "10.0.0.1:80", "[::1]", "0.0.0.0", "x.localhost",
                 "llm.example.com:9"]:
        assert host_allowed(host, extra), host
    for host in ["example.com", "8.8.8.8", "localhost.example.com", "127.0.0.1.nip.io"]:
        assert not host_allowed(host, extra), host


def test_cors_preflight_allows_the_sdks_headers() -> None:
    """The Anthropic and OpenAI SDKs send x-api-key, anthropic-version, x-stainless-*."""
    settings = Settings(cors_origins=["http://app.example"], threads=1)
    app = create_app(ModelManager(Limits(max_memory=None)), settings)
    asked = "authorization,content-type,x-api-key,anthropic-version,x-stainless-os"
    response = TestClient(app, base_url="http://127.0.0.1").options(
        "/v1/messages", headers={"Origin": "http://app.example",
                                 "Access-Control-Request-Method": "POST",
                                 "Access-Control-Request-Headers": asked})
    assert response.status_code == 200, response.text
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(header in allowed for header in asked.split(","))


# Keys

def test_a_key_file_without_keys_refuses_to_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\n\n   \n  # indented comment\n")
    result = CliRunner().invoke(main, ["run", "./nothing.gguf", "--api-key-file", str(keys)])
    assert result.exit_code == 2, result.output
    assert "holds no API key" in result.output and str(keys) in result.output


def test_indented_comments_are_not_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("  # a comment\nsecret\n")
    assert Settings(api_key_file=keys, threads=1).keys() == ["secret"]


# keep_alive

NOT_DURATIONS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", 1e300, 7**5000, -(7**5000)]


@pytest.mark.parametrize("value", NOT_DURATIONS)
def test_keep_alive_is_a_finite_duration(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)
    with pytest.raises(ValidationError):
        Settings(keep_alive=value, threads=1)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed",
                                  "/v1/chat/completions"])
def test_non_finite_keep_alive_is_400(http: httpx.Client, path: str, value: str) -> None:
    body = {"model": "smollm2", "messages": HI, "prompt": "Hi", "input": "Hi", "stream": False,
            "max_tokens": 1, "options": {"num_predict": 1}, "keep_alive": value}
    assert "keep_alive" in assert_error_shape(path, http.post(path, json=body), 400)
    as_number = json.dumps(body).replace(f'"{value}"', value.replace("inf", "Infinity"))
    response = http.post(path, content=as_number, headers={"Content-Type": "application/json"})
    assert_error_shape(path, response, 400)
    assert http.get("/api/ps").status_code == 200


# Bodies Python parses but JSON does not mean

def test_the_json_loader_refuses_what_is_not_json_text() -> None:
    for raw in [b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": "\\ud800"}',
                b'{"\\udfff": 1}', b'{"a": ' + b"9" * 5000 + b"}", '{"a": "\ud800"}'.encode(
                    "utf-8", "surrogatepass"), '{"a": 1}'.encode("utf-16")]:
        with pytest.raises(jsonbody.BodyError):
            jsonbody.loads(raw)
    assert jsonbody.loads(b'{"a": "\\ud83e\\udd99", "b": 1.5e300}') == {"a": "🦙", "b": 1.5e300}


SURROGATE_BODIES = [
    ("/v1/chat/completions", {"model": "smollm2", "max_tokens": 1,
                              "messages": [{"role": "user", "content": "\ud800"}]}),
    ("/v1/chat/completions", {"model": "\ud800", "messages": HI}),
    ("/v1/completions", {"model": "smollm2", "max_tokens": 1, "prompt": "a\udfffb"}),
    ("/v1/embeddings", {"model": "smollm2", "input": "\ud800"}),
    ("/v1/responses", {"model": "smollm2", "input": "\ud800", "max_output_tokens": 16}),
    ("/v1/messages", {"model": "smollm2", "max_tokens": 1, "system": "\ud800", "messages": HI}),
    ("/v1/messages/count_tokens", {"model": "smollm2",
                                   "messages": [{"role": "user", "content": "\ud800"}]}),
    ("/api/generate", {"model": "smollm2", "prompt": "\ud800", "stream": False}),
    ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "\ud800"}]}),
    ("/api/show", {"model": "\ud800"}),
    ("/tokenize", {"model": "smollm2", "content": "\ud800"}),
    ("/v1/rerank", {"model": "smollm2", "query": "\ud800", "documents": ["a"]}),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES)
def test_a_lone_surrogate_is_400(http: httpx.Client, path: str, body: dict) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: "\ud800" travels as an escape
    response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert "surrogate" in assert_error_shape(path, response, 400)


@pytest.mark.parametrize("path", sorted({path for path, _ in SURROGATE_BODIES}))
def test_a_5000_digit_integer_is_400(http: httpx.Client, path: str) -> None:
    raw = b'{"model": "smollm2", "max_tokens": ' + b"7" * 5000 + b', "messages": []}'
    response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert "too long" in assert_error_shape(path, response, 400)


# Small

@pytest.mark.parametrize("path", ["/health/", "/metrics/", "/api/ps/", "/api/tags/",
                                  "/api/version/", "/v1/models/"])
def test_trailing_slashes_answer(http: httpx.Client, path: str) -> None:
    assert http.get(path).status_code == 200


def test_the_server_still_serves(server: LiveServer, http: httpx.Client) -> None:
    assert http.post("/v1/chat/completions", json=ROUTES[0][1]).status_code == 200


def test_text_that_cannot_be_encoded_is_a_400_wherever_it_is_met() -> None:
    """The net under the body loader: a lone surrogate reaching the tokenizer by another way."""
    from llamaserve.errors import request_error

    with pytest.raises(UnicodeEncodeError) as raised:
        "\ud800".encode()
    assert request_error(raised.value).status == 400


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_4000_digit_keep_alive_is_400(http: httpx.Client, path: str) -> None:
    """Under Python's digit limit, so parsed: float() of it overflowed (a 500)."""
    raw = (b'{"model": "smollm2", "messages": [], "keep_alive": ' + b"7" * 4000 + b"}")
    response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_error_shape(path, response, 400)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed",
                                  "/v1/chat/completions"])
def test_a_boolean_keep_alive_is_400(http: httpx.Client, path: str) -> None:
    """Ollama's Duration is a number or a string; pydantic's lax float read `true` as 1 second,
    which unloaded the model a second after the request (found by the fuzzer)."""
    body = {"model": "smollm2", "messages": HI, "prompt": "Hi", "input": "Hi", "stream": False,
            "max_tokens": 1, "options": {"num_predict": 1}, "keep_alive": True}
    assert "keep_alive" in assert_error_shape(path, http.post(path, json=body), 400)
