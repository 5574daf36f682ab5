"""How a model is loaded: what the CLI and the catalog decide, handed to the engines."""

from __future__ import annotations

from dataclasses import dataclass

# A model's training context may be 128k tokens: without --ctx, each sequence gets at most this.
DEFAULT_CONTEXT_CAP = 4096
DEFAULT_PARALLEL = 4
DEFAULT_QUEUE_SIZE = 64
DEFAULT_QUEUE_TIMEOUT = 300.0
N_BATCH = 512  # tokens per llama_decode call, and per micro-batch (llama.cpp's n_ubatch)
CPU_UBATCH = 63  # tokens per micro-batch with --deterministic on the CPU (engine/context.py)
# KV cache element types (--cache-type-k/-v): llama.cpp needs flash attention for a quantized V.
CACHE_TYPES = ("f16", "q8_0", "q4_0")
DEFAULT_CACHE_TYPE = "f16"
DEFAULT_DRAFT_MAX = 12  # speculative decoding: draft tokens per sequence and step, at most


def micro_batch(n_gpu_layers: int, deterministic: bool = False) -> int:
    """Tokens per llama.cpp micro-batch: llama.cpp's default, or under 64 for batch invariance
    on the CPU (--deterministic)."""
    return CPU_UBATCH if deterministic and n_gpu_layers == 0 else N_BATCH


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
    deterministic: bool = False  # outputs independent of batch shape (slower prompts)
    cache_type_k: str = DEFAULT_CACHE_TYPE  # one of CACHE_TYPES
    cache_type_v: str = DEFAULT_CACHE_TYPE
    speculative: str = "auto"  # auto | ngram | draft | off (engine/speculative.py)
    draft_max: int = DEFAULT_DRAFT_MAX
