"""Creating a model's llama.cpp context: the only code that touches llama-cpp-python's private
`Llama._ctx` and `Llama._model`.

llama-cpp-python's `Llama` constructor cannot ask for one KV stream per sequence, so the
model is loaded with a placeholder context that is replaced here; `ModelContext` then gives
the scheduler what it needs of llama.cpp (decode, logits rows, sequence cells, the vocabulary)
without reaching into the `Llama` object again.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaContext

from .logs import route_llama_logs
from .options import CACHE_TYPES, N_BATCH, LoadOptions, micro_batch

logger = logging.getLogger(__name__)

# llama_decode's non-zero results (llama.h); any other negative value is a fatal error.
DECODE_FAILURES = {
    1: "no free KV cells for the batch",
    2: "aborted",
    -1: "invalid input batch",
}


def decode_failure(result: int) -> str:
    return DECODE_FAILURES.get(result, "fatal error")


def load_llama(path: Path, options: LoadOptions) -> Llama:
    """The weights, with a context of `parallel` sequences of `n_ctx` cells each (blocking)."""
    if options.n_ctx is None:  # decided by the caller (gguf_info.effective_context), never here
        raise ValueError("LoadOptions.n_ctx must be set to load a model")
    route_llama_logs()
    llama = Llama(
        model_path=str(path),
        n_ctx=16,  # a placeholder context, replaced below
        n_batch=16,
        n_ubatch=16,
        n_threads=options.n_threads,
        n_threads_batch=options.n_threads,
        n_gpu_layers=options.n_gpu_layers,
        swa_full=True,  # a sliding-window model keeps every cell, so prefixes stay reusable
        verbose=options.verbose,
    )
    try:
        _replace_context(llama, options)
    except BaseException:
        llama.close()
        raise
    return llama


GGML_CACHE_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}


def cache_type(name: str) -> int:
    """The ggml type of a KV cache type name (--cache-type-k/-v)."""
    try:
        return GGML_CACHE_TYPES[name]
    except KeyError:
        raise ValueError(f"'{name}' is not a KV cache type: use one of "
                         f"{', '.join(CACHE_TYPES)}") from None


def _replace_context(llama: Llama, options: LoadOptions) -> None:
    """Swap the Llama's context for one with `parallel` sequences, each with its own KV
    stream of n_ctx cells (llama-cpp-python's constructor cannot ask for that)."""
    assert options.n_ctx is not None
    params = llama.context_params
    params.n_ctx = options.n_ctx * options.parallel
    params.n_seq_max = options.parallel
    params.kv_unified = False  # a stream of n_ctx cells per sequence
    params.n_batch = N_BATCH
    params.type_k = cache_type(options.cache_type_k)
    params.type_v = cache_type(options.cache_type_v)
    on_cpu = options.n_gpu_layers == 0
    params.n_ubatch = micro_batch(options.n_gpu_layers, options.deterministic)
    # On the CPU flash attention is faster at every micro-batch size (measured with SmolLM2);
    # with a GPU llama.cpp decides.
    params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if on_cpu
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO)
    if options.deterministic and on_cpu:
        # Batch invariance (--deterministic). llama.cpp's CPU attention sums over KV cells in
        # cell order, in f16: where a sequence's cells sit changes its output. A unified cache
        # interleaves sequences and refills holes out of order; one stream per sequence keeps
        # each sequence's cells in position order. Flash attention also takes a tiled path
        # (other rounding) for 64 or more query tokens, so micro-batches stay under 64
        # (micro_batch). Then a request's output does not depend on what else is decoded with
        # it or on the prefix cache (tests/test_batching.py). The cost: 20 % (1,000-token
        # prompts) to 50 % (3,000) of prompt throughput with SmolLM2 on 2 cores. Without it,
        # a micro-batch of 64 tokens or more rounds differently, so only the same request
        # under the same concurrency repeats (the scheduler decodes a prompt's last token
        # alone, as after a prefix-cache hit).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    elif options.deterministic:
        logger.warning("--deterministic: batch-invariant outputs are only provided on the "
                       "CPU; with GPU offload llama.cpp's kernels decide")
    if options.cache_type_v != "f16" and not on_cpu:
        # llama.cpp cannot store a quantized V without flash attention.
        logger.info("--cache-type-v %s needs flash attention: turned on", options.cache_type_v)
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    llama._ctx.close()
    llama._ctx = llama._stack.enter_context(contextlib.closing(
        LlamaContext(model=llama._model, params=params, verbose=llama.verbose)))
    llama._n_ctx = llama._ctx.n_ctx()


class ModelContext:
    """llama.cpp's context of one loaded model, as the scheduler uses it (its thread only)."""

    def __init__(self, llama: Llama) -> None:
        self.llama = llama
        self.context: LlamaContext = llama._ctx  # what LlamaSampler.sample takes
        self.raw = self.context.ctx  # the llama_context pointer (mtmd needs it)
        self.vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        self._memory = llama_cpp.llama_get_memory(self.raw)
        model = llama._model.model
        # Partial removal of a sequence's cells is impossible for recurrent state, so their
        # prompts are always evaluated whole.
        self.prefix_reuse = not (llama_cpp.llama_model_is_recurrent(model)
                                 or llama_cpp.llama_model_is_hybrid(model))
        self.n_swa = llama_cpp.llama_model_n_swa(model)
        self.batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)

    @property
    def memory_bytes(self) -> int:
        """Weights plus the context's state (KV cache, logits): what staying resident costs."""
        return self.llama._model.size() + llama_cpp.llama_state_get_size(self.raw)

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> bytes:
        return bytes(llama_cpp.llama_vocab_get_text(self.vocab, token) or b"")

    def put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self.batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def decode(self, n_tokens: int) -> int:
        """Decode the first `n_tokens` entries of the batch; llama_decode's result."""
        self.batch.n_tokens = n_tokens
        return int(llama_cpp.llama_decode(self.raw, self.batch))

    def logits(self, index: int) -> np.ndarray:
        """The logits row of batch entry `index` (-1: the last), writable in place: the
        sampler chain reads the same memory."""
        pointer = self.context.get_logits_ith(index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def drop_cells(self, seq: int, start: int = -1) -> bool:
        """Remove sequence `seq`'s cells from position `start` on (-1: all of them)."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, seq, start, -1))

    def copy_cells(self, source: int, target: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, target, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def first_position(self, seq: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_min(self._memory, seq))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        self.llama.close()

