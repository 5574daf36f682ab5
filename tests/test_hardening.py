"""Running it safely: API keys, CORS, limits, metrics, access log, time limit, shutdown, bad
model files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import LiveServer, assert_openai_error, free_port, start_server

CHAT = "/v1/chat/completions"
HI = {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A server that needs an API key: two from flags, one from the environment, one from a
    file; JSON logs; a browser origin allowed."""
    tmp = tmp_path_factory.mktemp("guarded")
    key_file = tmp / "keys.txt"
    key_file.write_text("# one key per line\nkey-from-file\n")
    live = start_server(
        ["smollm2", "--ctx", "512", "--api-key", "key-one-secret", "--api-key", "key-two",
         "--api-key-file", str(key_file), "--log-format", "json",
         "--cors-origin", "http://app.example"],
        tmp, env={"LLAMASERVE_API_KEY": "key-from-env"},
    )
    yield live
    live.stop()


def test_requests_without_a_key_are_401(guarded: LiveServer) -> None:
    error = assert_openai_error(httpx.post(f"{guarded.base_url}{CHAT}", json=HI), 401)
    assert error["code"] == "invalid_api_key"
    wrong = httpx.get(f"{guarded.base_url}/v1/models",
                      headers={"Authorization": "Bearer nope"})
    assert_openai_error(wrong, 401)


@pytest.mark.parametrize("key", ["key-one-secret", "key-two", "key-from-env", "key-from-file"])
def test_every_configured_key_is_accepted(guarded: LiveServer, key: str) -> None:
    client = openai.OpenAI(base_url=guarded.v1, api_key=key, max_retries=0)
    assert client.chat.completions.create(**HI).choices[0].message.content is not None


def test_wrong_key_through_the_openai_client(guarded: LiveServer) -> None:
    client = openai.OpenAI(base_url=guarded.v1, api_key="IGNORED", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_health_needs_no_key(guarded: LiveServer) -> None:
    assert httpx.get(f"{guarded.base_url}/health").status_code == 200


def test_keys_are_never_logged(guarded: LiveServer) -> None:
    httpx.post(f"{guarded.base_url}{CHAT}", json=HI,
               headers={"Authorization": "Bearer key-one-secret"})
    assert "key-one-secret" not in guarded.log()
    assert "key-from-file" not in guarded.log()


def test_cors_preflight_for_an_allowed_origin(guarded: LiveServer) -> None:
    response = httpx.options(f"{guarded.base_url}{CHAT}", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(f"{guarded.base_url}{CHAT}", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(http: httpx.Client) -> None:
    response = http.post(CHAT, json=HI, headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_access_log_is_one_json_object_per_request(guarded: LiveServer) -> None:
    httpx.post(f"{guarded.base_url}{CHAT}", json={**HI, "max_tokens": 3},
               headers={"Authorization": "Bearer key-two"})
    entries = [json.loads(line) for line in guarded.log().splitlines()
               if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "llamaserve.access" and e["path"] == CHAT
              and e["status"] == 200]
    assert access, guarded.log()[-2000:]
    last = access[-1]
    assert last["model"] == "smollm2"
    assert last["completion_tokens"] <= 3 and last["prompt_tokens"] > 0
    assert last["duration_ms"] > 0


def test_metrics_in_prometheus_text_format(http: httpx.Client) -> None:
    http.post(CHAT, json=HI)
    http.post("/v1/completions", json={"model": "smollm2", "prompt": "Hi", "max_tokens": 2})
    text = http.get("/metrics").text
    assert 'llamaserve_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'llamaserve_generated_tokens_total{model="smollm2"}' in text
    assert 'llamaserve_time_to_first_token_seconds_bucket{le="0.5",model="smollm2"}' in text
    assert 'llamaserve_request_duration_seconds_count{route="/v1/completions"}' in text
    assert 'llamaserve_model_loaded{model="smollm2"} 1.0' in text
    assert "llamaserve_queue_depth 0.0" in text
    memory = next(line for line in text.splitlines()
                  if line.startswith('llamaserve_model_memory_bytes{model="smollm2"}'))
    assert float(memory.split()[-1]) > 50e6  # SmolLM2's weights alone are ~98 MB


@pytest.mark.parametrize(("change", "param"), [
    ({"messages": [{"role": "user", "content": "x"}] * 1025}, "messages"),
    ({"stop": "x" * 300}, "stop"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]},
     "tools"),
    ({"grammar": "root ::= " + '"a" ' * 20000}, "grammar"),
    ({"n": 129}, "n"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": {
        "type": "object", "properties": {f"field_{i}": {"type": "string"}
                                         for i in range(4000)}}}}},
     "response_format.json_schema"),
])
def test_limits_are_400_naming_the_field(http: httpx.Client, change: dict, param: str) -> None:
    response = http.post(CHAT, json={**HI, **change})
    assert assert_openai_error(response, 400)["param"] == param


def test_request_time_limit_ends_generation(smollm2_path: Path, tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "2048", "--request-timeout", "0.3"], tmp_path)
    try:
        client = openai.OpenAI(base_url=live.v1, api_key="x", max_retries=0)
        completion = client.chat.completions.create(
            model="smollm2", max_tokens=1500, temperature=1, seed=1,
            messages=[{"role": "user", "content": "Write a very long essay about the sea."}])
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens < 1500
        assert "request time limit" in live.log()
    finally:
        live.stop()


def test_sigterm_lets_a_running_stream_finish(tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "512"], tmp_path)
    body = {"model": "smollm2", "stream": True, "max_tokens": 60, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a story about a river."}]}
    lines: list[str] = []
    with httpx.stream("POST", f"{live.base_url}{CHAT}", json=body, timeout=60) as response:
        stream = response.iter_lines()
        lines.append(next(stream))
        stopper = threading.Thread(target=live.stop, args=(signal.SIGTERM,))
        stopper.start()
        lines.extend(stream)
    stopper.join()
    lines = [line for line in lines if line]
    assert lines[-1] == "data: [DONE]"
    assert len(lines) > 10  # the whole answer, not a cut-off stream
    assert live.process.returncode == 0
    assert "Traceback" not in live.log()


def test_binding_beyond_localhost_without_a_key_warns(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", "smollm2", "--ctx", "256", "--host",
         "0.0.0.0", "--port", str(free_port())],
        stderr=subprocess.PIPE, text=True)
    try:
        first_line = process.stderr.readline()
        assert "without an API key" in first_line
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_truncated_gguf_fails_with_a_message_naming_the_file(smollm2_path: Path,
                                                            tmp_path: Path) -> None:
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[: 4 * 1024 * 1024])
    result = subprocess.run([sys.executable, "-m", "llamaserve", "run", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert str(broken) in result.stderr
    assert "Traceback" not in result.stderr


def test_gguf_of_a_wrong_architecture_fails_naming_the_file(tmp_path: Path) -> None:
    """A valid GGUF that is no language model (a vision projector) is refused at start."""
    from .builders import write_llava_projector

    projector = write_llava_projector(tmp_path / "not-a-language-model.gguf")
    result = subprocess.run([sys.executable, "-m", "llamaserve", "run", str(projector)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert str(projector) in result.stderr
    assert "Traceback" not in result.stderr
