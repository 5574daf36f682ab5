"""Stored responses: the bounded stores (memory, SQLite), --state-dir across a restart, and a
response that fails after its stream started."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from llamaserve.core.choices import ChoiceDelta
from llamaserve.core.tool_calls import ParsedToolCall
from llamaserve.engine import Finished
from llamaserve.protocols.openai.response_events import ResponseRun
from llamaserve.protocols.openai.response_store import MemoryStore, SQLiteStore, StoreError
from llamaserve.protocols.openai.responses_schemas import ResponseObject

from .conftest import app_with_failing_decode, assert_openai_error, start_server


def record(n: int) -> dict[str, Any]:
    return {"response": {"id": f"resp_{n}"}, "input_items": [{"id": f"msg_{n}"}]}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_drops_the_least_recently_used_beyond_its_capacity(kind: str,
                                                                 tmp_path: Path) -> None:
    store = MemoryStore(2) if kind == "memory" else SQLiteStore(tmp_path, 2)

    async def scenario() -> None:
        await store.put("a", record(1))
        await store.put("b", record(2))
        assert await store.get("a") == record(1)  # a is now more recent than b
        await store.put("c", record(3))
        assert await store.get("b") is None
        assert await store.get("a") == record(1) and await store.get("c") == record(3)
        assert await store.delete("a") and not await store.delete("a")
        assert await store.get("a") is None

    asyncio.run(scenario())
    store.close()


def test_memory_store_keeps_at_most_its_byte_budget() -> None:
    size = len(json.dumps(record(1)))
    store = MemoryStore(100, max_bytes=2 * size)

    async def scenario() -> None:
        for n in range(1, 4):
            await store.put(f"r{n}", record(n))
        assert len(store) == 2 and await store.get("r1") is None
        await store.put("big", {"response": {}, "input_items": ["x" * 10 * size]})
        assert len(store) == 1 and await store.get("big") is not None  # the newest stays

    asyncio.run(scenario())


def test_sqlite_store_keeps_records_across_instances(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "state", 10)
    asyncio.run(first.put("a", record(1)))
    first.close()
    second = SQLiteStore(tmp_path / "state", 10)
    assert asyncio.run(second.get("a")) == record(1) and second.count() == 1
    second.close()


def test_sqlite_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "responses.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="responses.sqlite3"):
        SQLiteStore(tmp_path, 10)


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    async def deltas() -> Any:
        calls = [ParsedToolCall("f", '{"a": 1}'), ParsedToolCall("g", "{}")]
        yield ChoiceDelta(0, tool_calls=calls)
        yield ChoiceDelta(0, finish_reason="tool_calls", finished=Finished("stop", 5, 3))

    async def run(parallel: bool) -> dict[str, Any]:
        response = ResponseObject(id="resp_1", created_at=0, model="m")
        events = ResponseRun(response, parallel_tool_calls=parallel).events(deltas(), True)
        return [event async for event in events][-1]["response"]

    assert [item["name"] for item in asyncio.run(run(True))["output"]] == ["f", "g"]
    (only,) = asyncio.run(run(False))["output"]
    assert only["name"] == "f" and only["arguments"] == '{"a": 1}'
    Response.model_validate(asyncio.run(run(False)))


# -- --state-dir: a restart keeps the conversation --------------------------------------------

def test_state_dir_keeps_responses_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"LLAMASERVE_MAX_STORED_RESPONSES": "2"}
    args = ["smollm2", "--ctx", "1024", "--state-dir", str(state)]
    body = {"model": "smollm2", "temperature": 0, "max_output_tokens": 2}
    first = start_server(args, tmp_path, env)
    try:
        one = httpx.post(f"{first.v1}responses", json={**body, "input": "Hi"}, timeout=120)
        two = httpx.post(f"{first.v1}responses", json={**body, "input": "Bye"}, timeout=120)
    finally:
        assert first.stop() == 0
    assert (state / "responses.sqlite3").is_file()
    second = start_server(args, tmp_path, env)
    try:
        kept = httpx.get(f"{second.v1}responses/{one.json()['id']}", timeout=120)
        assert kept.status_code == 200 and kept.json() == one.json()
        three = httpx.post(f"{second.v1}responses", timeout=120, json={
            **body, "input": "Again", "previous_response_id": two.json()["id"]})
        assert three.status_code == 200, three.text
        items = httpx.get(f"{second.v1}responses/{three.json()['id']}/input_items",
                          params={"order": "asc"}, timeout=120).json()["data"]
        assert items[0]["content"][0]["text"] == "Bye"
        # capacity 2: one (read before two) is now the least recently used, and dropped
        assert_openai_error(httpx.get(f"{second.v1}responses/{one.json()['id']}"), 404)
    finally:
        second.stop()


def test_state_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "file").write_text("x")
    result = subprocess.run([sys.executable, "-m", "llamaserve", "run", "smollm2",
                             "--state-dir", str(tmp_path / "file")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--state-dir" in result.stderr
    assert "is not a directory" in result.stderr


# -- a failure after the stream started ------------------------------------------------------

@pytest.fixture
def failing_decode_app(smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> Iterator[tuple[Any, list[int]]]:
    """The app in-process on SmolLM2, with llama_decode failing from the call number set in
    the returned list on (conftest.app_with_failing_decode)."""
    from llamaserve.models.hub import ModelFiles
    from llamaserve.settings import Settings

    yield from app_with_failing_decode(monkeypatch, "smollm2", ModelFiles(weights=smollm2_path),
                                       Settings(ctx=512, threads=1, parallel=1))


def test_engine_failure_mid_stream_is_an_error_then_response_failed(
    failing_decode_app: tuple[Any, list[int]],
) -> None:
    client, fail_from = failing_decode_app
    fail_from[0] = 4  # the prompt, then a few tokens are streamed first
    body = {"model": "smollm2", "input": "Describe a garden.", "max_output_tokens": 20,
            "stream": True, "temperature": 0}
    with client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        frames = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ")]
    for event in frames:
        TypeAdapter(ResponseStreamEvent).validate_python(event)
    kinds = [event["type"] for event in frames]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert frames[-2]["code"] == "server_error"
    failed = frames[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    numbers = [event["sequence_number"] for event in frames]
    assert numbers == list(range(len(frames)))
    stored = client.get(f"/v1/responses/{failed['id']}")
    assert stored.status_code == 200 and stored.json()["status"] == "failed"


def test_engine_failure_without_stream_is_a_500(failing_decode_app: tuple[Any, list[int]]
                                                ) -> None:
    client, fail_from = failing_decode_app
    fail_from[0] = 1
    response = client.post("/v1/responses", json={"model": "smollm2", "input": "Hi"})
    error = assert_openai_error(response, 500)
    assert error["code"] == "server_error"
