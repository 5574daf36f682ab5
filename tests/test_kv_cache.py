"""KV cache types (--cache-type-k/-v): the memory estimate, a server with a quantized cache
serving chats (llama.cpp's own load log confirms the types), `show`, `ps`, /api/ps, /api/show,
and a clear error for a type that is not offered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llamaserve.engine.options import micro_batch
from llamaserve.models.gguf_info import cache_bytes_per_element, read_model_info

from .conftest import LiveServer, start_server

MIB = 1 << 20


def llamaserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamaserve", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_bytes_per_element_of_each_cache_type() -> None:
    assert cache_bytes_per_element("f16") == 2
    assert cache_bytes_per_element("q8_0") == 34 / 32
    assert cache_bytes_per_element("q4_0") == 18 / 32


def test_quantized_cache_types_shrink_the_kv_estimate(smollm2_path: Path) -> None:
    info = read_model_info(smollm2_path)
    f16 = info.estimate(2048)  # llama.cpp's load log: KV 45.00 MiB (K 22.50, V 22.50)
    assert f16.kv_cache == 45 * MIB and (f16.cache_type_k, f16.cache_type_v) == ("f16", "f16")
    q8 = info.estimate(2048, cache_type_k="q8_0", cache_type_v="q8_0")
    assert q8.kv_cache == 45 * MIB * 34 // 64  # 23.91 MiB
    q4 = info.estimate(2048, cache_type_k="q4_0", cache_type_v="q4_0")
    assert q4.kv_cache == 45 * MIB * 18 // 64  # 12.66 MiB
    mixed = info.estimate(2048, sequences=4, cache_type_k="q8_0", cache_type_v="q4_0")
    assert mixed.kv_cache == 4 * 2048 * 30 * 192 * (34 + 18) // 32  # K and V per layer: 192
    # the rest of the estimate does not depend on the cache types
    assert (q4.weights, q4.compute) == (f16.weights, f16.compute)
    assert mixed.total == mixed.weights + mixed.kv_cache + mixed.compute


def test_show_prints_the_estimate_for_the_cache_types_asked() -> None:
    plain = llamaserve("show", "smollm2", "--ctx", "2048")
    quantized = llamaserve("show", "smollm2", "--ctx", "2048", "--cache-type-k", "q8_0",
                           "--cache-type-v", "q4_0")
    assert plain.returncode == quantized.returncode == 0, plain.stderr + quantized.stderr
    assert "KV cache 188.7 MB (f16)" in plain.stdout  # 4 sequences x 45 MiB
    assert "KV cache 76.7 MB (K q8_0, V q4_0)" in quantized.stdout


@pytest.mark.parametrize("args", [["--cache-type-k", "q5_1"], ["--cache-type-v", "f32"]])
def test_a_cache_type_not_offered_is_a_usage_error(args: list[str]) -> None:
    result = llamaserve("run", "smollm2", *args)
    assert result.returncode == 2
    flag = args[0]
    assert f"Invalid value for '{flag}'" in result.stderr
    assert "'f16', 'q8_0', 'q4_0'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cache_type_not_offered_in_the_environment_is_a_usage_error() -> None:
    result = llamaserve("run", "smollm2", env={"LLAMASERVE_CACHE_TYPE_V": "q4"})
    assert result.returncode == 2
    assert "--cache-type-v" in result.stderr and "'q8_0'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(["smollm2", "--ctx", "512", "--cache-type-k", "q8_0",
                         "--cache-type-v", "q4_0", "--verbose"],
                        tmp_path_factory.mktemp("kv-cache"))
    yield live
    live.stop()


def test_a_quantized_cache_serves_chats(quantized: LiveServer) -> None:
    client = openai.OpenAI(base_url=quantized.v1, api_key="IGNORED", max_retries=0,
                           timeout=120)
    answer = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0)
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    streamed = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == answer.choices[0].message.content
    # llama.cpp's own account of the cache it allocated: the types and sizes asked for
    log = quantized.log()
    match = re.search(r"K \(q8_0\):\s+([\d.]+) MiB, V \(q4_0\):\s+([\d.]+) MiB", log)
    assert match is not None, log[-3000:]
    k_mib, v_mib = (float(x) for x in match.groups())
    assert abs(k_mib - 4 * 512 * 30 * 192 * 34 / 32 / MIB) < 0.01
    assert abs(v_mib - 4 * 512 * 30 * 192 * 18 / 32 / MIB) < 0.01
    # the default: llama.cpp's micro-batch size, flash attention (which a quantized V needs)
    served = log[log.rindex("n_seq_max             = 4"):]
    assert re.search(r"n_ubatch\s+= 512\n", served) and re.search(r"flash_attn\s+= enabled", served)


def test_ps_and_show_report_the_cache_types(quantized: LiveServer, smollm2_path: Path) -> None:
    [model] = httpx.get(f"{quantized.base_url}/api/ps").json()["models"]
    assert (model["cache_type_k"], model["cache_type_v"]) == ("q8_0", "q4_0")
    expected = read_model_info(smollm2_path).estimate(
        512, micro_batch(0), sequences=4, cache_type_k="q8_0", cache_type_v="q4_0")
    assert model["size"] == expected.total
    assert model["estimate"]["kv_cache"] == expected.kv_cache
    shown = httpx.post(f"{quantized.base_url}/api/show", json={"model": "smollm2"}).json()
    assert (shown["cache_type_k"], shown["cache_type_v"]) == ("q8_0", "q4_0")
    port = quantized.base_url.rsplit(":", 1)[1]
    table = llamaserve("ps", "--port", port)
    assert table.returncode == 0, table.stderr
    assert "512 (K q8_0, V q4_0)" in table.stdout
