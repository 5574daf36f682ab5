"""Embeddings and reranking on llama.cpp: one embedding-mode context per model, on its own
worker thread.

A list of inputs is packed into as few `llama_batch`es as the context allows, one sequence id
per input, and each pooled vector is read back with `llama_get_embeddings_seq`, as
llama-cpp-python's `Llama.embed` does. We drive the same internals (`_batch.add_sequence`,
`_ctx.decode`, `_ctx.get_embeddings_seq`) rather than call `Llama.embed`, because that method
takes only strings and silently truncates long ones, where the API must accept token ids and
refuse an input that does not fit with an error naming it.

A reranker (pooling type rank) is loaded the same way; its (query, document) pairs are packed
into batches like embedding inputs, and each sequence's output is its relevance (rerank.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import llama_cpp
import numpy as np
from llama_cpp import Llama

from .logs import route_llama_logs
from .options import LoadOptions
from .rerank import PairFormat, Ranking, relevance
from .tokens import Vocabulary
from .types import EngineError

T = TypeVar("T")

logger = logging.getLogger(__name__)

EmbeddingInput = str | list[int]


class _Cancelled(Exception):
    """The request's client left: nobody awaits the result any more."""

# Pooling a model's metadata may ask for that yields one vector per input; anything else (none,
# rank) falls back to mean pooling, which is what Ollama and llama-server give chat models.
_VECTOR_POOLINGS = {
    llama_cpp.LLAMA_POOLING_TYPE_MEAN: "mean",
    llama_cpp.LLAMA_POOLING_TYPE_CLS: "cls",
    llama_cpp.LLAMA_POOLING_TYPE_LAST: "last",
}
# A chat model's embedding context evaluates at most this many tokens per batch, llama-server's
# default physical batch: llama.cpp keeps logits for every token of an embedding batch
# (n_vocab floats each), ~200 MB per 1024 tokens for a 49k-token vocabulary.
CHAT_MODEL_BATCH_CAP = 512


def read_metadata(path: Path) -> dict[str, str]:
    """The GGUF header's key/values as llama.cpp reads them (vocabulary only, no weights)."""
    probe = Llama(str(path), vocab_only=True, verbose=False)
    try:
        return dict(probe.metadata)
    finally:
        probe.close()


def _pooling(metadata: dict[str, str]) -> int:
    arch = metadata.get("general.architecture", "")
    pooling = int(metadata.get(f"{arch}.pooling_type", llama_cpp.LLAMA_POOLING_TYPE_NONE))
    if pooling in _VECTOR_POOLINGS or pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK:
        return pooling
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN


def pack_batches(lengths: Sequence[int], max_tokens: int, max_sequences: int) -> Iterator[range]:
    """Consecutive runs of inputs, in order, each fitting one llama_batch: at most `max_tokens`
    tokens and `max_sequences` sequence ids. An input is never split (its length is checked
    against `max_tokens` before)."""
    start, tokens = 0, 0
    for i, length in enumerate(lengths):
        if i > start and (i - start >= max_sequences or tokens + length > max_tokens):
            yield range(start, i)
            start, tokens = i, 0
        tokens += length
    if start < len(lengths):
        yield range(start, len(lengths))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


@dataclass
class Embeddings:
    vectors: np.ndarray  # float32, one unit-norm row per input, in input order
    prompt_tokens: int


class Embedder:
    """Pooled, L2-normalised embeddings of one model, or a reranker's relevance scores; one
    request at a time, off the loop."""

    def __init__(self, llama: Llama) -> None:
        self.llama = llama
        self.vocabulary = Vocabulary(llama)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        n_ctx_train = llama._model.n_ctx_train() or llama.n_batch
        # A non-causal model evaluates a whole batch in one micro-batch, so one input may use
        # the full batch; positions past the training context have no position embedding.
        self.max_input_tokens = min(llama.n_batch, n_ctx_train)
        self.n_embd = llama.n_embd()
        self.n_vocab = llama.n_vocab()
        self.ranks = llama.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_RANK
        self.pooling = "rank" if self.ranks else _VECTOR_POOLINGS.get(
            llama.pooling_type(), str(llama.pooling_type()))
        # What each sequence's pooled output holds: a vector, or the classification head's
        # outputs (one per label).
        self._width = (llama_cpp.llama_model_n_cls_out(llama._model.model) if self.ranks
                       else self.n_embd)
        self._pair_format = PairFormat.of(llama) if self.ranks else None
        self._n_seq_max = int(llama.context_params.n_seq_max)
        self._cancelled: threading.Event | None = None  # the running request's (worker only)
        _ = self.vocabulary.longest_piece  # read once at load, not on a request

    @classmethod
    def load(cls, path: Path, options: LoadOptions, *, chat_model: bool) -> Embedder:
        """An embedding context for `path` (blocking: call it from a worker thread).

        An embedding model pools as its metadata asks; a chat model is mean-pooled. The weights
        are mmapped, so a chat model's second context shares their pages with the first.
        """
        metadata = read_metadata(path)
        arch = metadata.get("general.architecture", "")
        n_ctx_train = int(metadata.get(f"{arch}.context_length", 0))
        n_ctx = options.n_ctx  # decided by the caller (gguf_info.effective_context)
        if n_ctx is None:
            raise ValueError("LoadOptions.n_ctx must be set to load a model")
        if n_ctx_train:  # positions past the training context have no position embedding
            n_ctx = min(n_ctx, n_ctx_train)
        if chat_model:
            pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            n_ctx = min(n_ctx, CHAT_MODEL_BATCH_CAP)
        else:
            pooling = _pooling(metadata)
        route_llama_logs()
        llama = Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=pooling,
            n_ctx=n_ctx,
            # Each input must fit one micro-batch: pooling cannot span two.
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            n_gpu_layers=options.n_gpu_layers,
            verbose=options.verbose,
        )
        embedder = cls(llama)
        logger.info(
            "embedding context for %s: %s pooling, %d dims, inputs up to %d tokens",
            path.name, embedder.pooling, embedder._width, embedder.max_input_tokens,
        )
        return embedder

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.llama.close()

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None,
        truncate: bool = False,
    ) -> Embeddings:
        """One unit vector per input, truncated to `dimensions` and renormalised if given.
        An input longer than the model embeds at once is an error, or with `truncate` (as
        Ollama's default) cut to its first tokens."""
        if self.ranks:
            raise EngineError("this model is a reranker: it scores (query, document) pairs "
                              "and computes no embeddings", param="model")
        if dimensions is not None and dimensions > self.n_embd:
            raise EngineError(
                f"'dimensions' is {dimensions}, but this model's embeddings have "
                f"{self.n_embd} dimensions; ask for {self.n_embd} or fewer.",
                param="dimensions",
            )
        result = await self._on_worker(self._embed, list(inputs), truncate)
        if dimensions is not None and dimensions < self.n_embd:
            result.vectors = normalize(result.vectors[:, :dimensions])
        return result

    def _stop_if_cancelled(self, where: str) -> None:
        if self._cancelled is not None and self._cancelled.is_set():
            logger.info("embedding request cancelled (its client left) %s", where)
            raise _Cancelled()

    def _within_reach(self, index: int, text: bytes, truncate: bool) -> bytes:
        """A text that cannot fit is refused before tokenizing it (31 MB take ~30 s); with
        `truncate` only its head is tokenized: twice the bytes that hold max_input_tokens
        tokens, so the tokens kept are those of the whole text (the cut falls far past
        them, unless one word is longer than that)."""
        vocabulary, limit = self.vocabulary, self.max_input_tokens
        fewest = vocabulary.fewest_tokens(len(text))
        if fewest <= limit:
            return text
        if not truncate:
            raise EngineError(
                f"input[{index}] has at least {fewest} tokens, more than this model embeds at "
                f"once ({limit} tokens). Shorten or split it.",
                param="input",
            )
        assert vocabulary.longest_piece is not None  # fewest_tokens is 0 without it
        return text[: 2 * limit * vocabulary.longest_piece]

    def _tokens(self, index: int, item: EmbeddingInput, truncate: bool) -> list[int]:
        if isinstance(item, str):
            text = self._within_reach(index, item.encode("utf-8"), truncate)
            # add_bos asks for the model's own special tokens: [CLS] … [SEP] for BERT, none for
            # SmolLM2 (its header says add_bos_token false).
            tokens = self.llama.tokenize(text, add_bos=True, special=False)
        else:
            bad = next((t for t in item if not 0 <= t < self.n_vocab), None)
            if bad is not None:
                raise EngineError(
                    f"input[{index}] has token id {bad}, outside the model's vocabulary "
                    f"(0..{self.n_vocab - 1}).",
                    param="input",
                )
            tokens = list(item)
        if not tokens:
            raise EngineError(f"input[{index}] has no tokens.", param="input")
        if len(tokens) > self.max_input_tokens and truncate:
            tokens = tokens[: self.max_input_tokens]
        if len(tokens) > self.max_input_tokens:
            raise EngineError(
                f"input[{index}] has {len(tokens)} tokens, more than this model embeds at "
                f"once ({self.max_input_tokens} tokens). Shorten or split it.",
                param="input",
            )
        return tokens

    def _embed(self, inputs: list[EmbeddingInput], truncate: bool = False) -> Embeddings:
        sequences = []
        for index, item in enumerate(inputs):
            self._stop_if_cancelled(f"while reading input {index} of {len(inputs)}")
            sequences.append(self._tokens(index, item, truncate))
        vectors, _ = self._evaluate(sequences)
        return Embeddings(normalize(vectors), sum(len(s) for s in sequences))

    async def rerank(self, query: str, documents: Sequence[str], raw: bool = False) -> Ranking:
        """The relevance of each document to the query (see rerank.relevance for the scale),
        every pair evaluated in as few batches as the context holds."""
        if not self.ranks:
            raise EngineError("this model is not a reranker (its pooling type is "
                              f"{self.pooling}, not rank)", param="model")
        return await self._on_worker(self._rerank, query, list(documents), raw)

    async def _on_worker(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the worker thread; if the caller is cancelled (its client left),
        the work stops at its next batch rather than running on for nobody."""
        cancelled = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(
            self._worker, lambda: self._cancellable(cancelled, work, *args))
        try:
            return await future
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _cancellable(self, cancelled: threading.Event, work: Callable[..., T],
                     *args: object) -> T:
        self._cancelled = cancelled
        try:
            return work(*args)
        finally:
            self._cancelled = None

    def _rerank(self, query: str, documents: list[str], raw: bool) -> Ranking:
        pairs = self._pairs(query, documents)
        outputs, batches = self._evaluate(pairs)
        return Ranking(relevance(outputs, raw), sum(len(p) for p in pairs), batches)

    def _pairs(self, query: str, documents: list[str]) -> list[list[int]]:
        """Each (query, document) pair's tokens, checked to fit one batch."""
        pair_format, vocabulary = self._pair_format, self.vocabulary
        assert pair_format is not None
        if pair_format.template is None:
            query_tokens = vocabulary.text_tokens(query, False, False)
            pairs = [pair_format.join(query_tokens, vocabulary.text_tokens(doc, False, False))
                     for doc in documents]
        else:
            pairs = [vocabulary.text_tokens(pair_format.render(query, doc), False, True)
                     for doc in documents]
        for index, pair in enumerate(pairs):
            if not pair:  # a vocabulary that adds no special tokens, and two empty texts
                raise EngineError(f"documents[{index}] and the query are both empty.",
                                  param=f"documents[{index}]")
            if len(pair) > self.max_input_tokens:
                raise EngineError(
                    f"documents[{index}] and the query together have {len(pair)} tokens, more "
                    f"than this model reads at once ({self.max_input_tokens} tokens). Shorten "
                    "or split the document.",
                    param=f"documents[{index}]",
                )
        return pairs

    def _evaluate(self, sequences: list[list[int]]) -> tuple[np.ndarray, int]:
        """Each sequence's pooled output (a row of `_width` floats) and the number of
        decodes, the sequences packed into as few batches as fit."""
        outputs = np.empty((len(sequences), self._width), dtype=np.float32)
        llama, batch, ctx = self.llama, self.llama._batch, self.llama._ctx
        lengths = [len(s) for s in sequences]
        runs = list(pack_batches(lengths, self.llama.n_batch, self._n_seq_max))
        for done, run in enumerate(runs):
            self._stop_if_cancelled(f"after {done} of {len(runs)} batches")
            batch.reset()
            for seq_id, i in enumerate(run):
                # Every token is an output in embedding mode (as in Llama.embed).
                batch.add_sequence(sequences[i], seq_id, True)
            ctx.kv_cache_clear()
            ctx.decode(batch)
            for seq_id, i in enumerate(run):
                pooled = ctx.get_embeddings_seq(seq_id)
                outputs[i] = np.ctypeslib.as_array(pooled, shape=(self._width,))
        batch.reset()
        ctx.kv_cache_clear()
        llama.reset()
        logger.debug("%d sequences, %d tokens, in %d batches", len(sequences), sum(lengths),
                     len(runs))
        return outputs, len(runs)
