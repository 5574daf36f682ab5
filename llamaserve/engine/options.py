"""How a model is loaded: what the CLI and the catalog decide, handed to the engines."""

from __future__ import annotations

from dataclasses import dataclass

# A model's training context may be 128k tokens: without --ctx, each sequence gets at most this.
DEFAULT_CONTEXT_CAP = 4096
DEFAULT_PARALLEL = 4
DEFAULT_QUEUE_SIZE = 64
DEFAULT_QUEUE_TIMEOUT = 300.0
N_BATCH = 512  # tokens per llama_decode call
CPU_UBATCH = 63  # tokens per micro-batch on the CPU (batch invariance: engine/context.py)


def micro_batch(n_gpu_layers: int) -> int:
    """Tokens per llama.cpp micro-batch: small on the CPU, llama.cpp's default with a GPU."""
    return CPU_UBATCH if n_gpu_layers == 0 else N_BATCH


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int | None = None  # per sequence; None: the model's training context, capped
    n_threads: int | None = None
    n_gpu_layers: int = 0
    chat_format: str | None = None
    chat_handler: str | None = None  # multimodal prompt format, see vision.HANDLERS
    verbose: bool = False
    parallel: int = DEFAULT_PARALLEL  # sequences decoded together (KV cache: n_ctx each)
    queue_size: int = DEFAULT_QUEUE_SIZE  # requests that may wait for a free sequence
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT  # seconds one may wait before a 503
