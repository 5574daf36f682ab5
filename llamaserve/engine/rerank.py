"""Reranking with a cross-encoder: how a (query, document) pair becomes one input, and how
the classification head's output becomes a relevance score.

A reranker GGUF is an embedding model whose pooling type is `rank` (llama.cpp's
LLAMA_POOLING_TYPE_RANK): llama.cpp pools the sequence (its first token for BERT-likes, its
last for causal models) and applies the model's classification head (`cls`, `cls.output`),
so `llama_get_embeddings_seq` returns `n_cls_out` floats per sequence instead of a vector.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import Llama

RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"
_PLACEHOLDER = re.compile(r"\{query\}|\{document\}")


@dataclass(frozen=True)
class PairFormat:
    """llama-server's `format_prompt_rerank`: the GGUF's rerank template when it has one
    (Qwen3-Reranker: `{query}` and `{document}` in a chat prompt), else
    `[BOS] query [EOS] [SEP] document [EOS]`, each special token only where the vocabulary
    asks for it (a WordPiece BERT: `[CLS] q [SEP] d`). Following it exactly gives the scores
    llama-server gives for the same GGUF."""

    template: str | None = None
    bos: int | None = None
    eos: int | None = None  # after the query and after the document
    sep: int | None = None  # between them, after the query's EOS

    @classmethod
    def of(cls, llama: Llama) -> PairFormat:
        template = llama.metadata.get(RERANK_TEMPLATE_KEY)
        if template:
            return cls(template=template)
        vocab = llama._model.vocab
        eos = llama_cpp.llama_vocab_eos(vocab)
        if eos == -1:  # BERT has no EOS: its separator ends a segment
            eos = llama_cpp.llama_vocab_sep(vocab)

        def wanted(flag: bool, token: int) -> int | None:
            return token if flag and token != -1 else None

        return cls(
            bos=wanted(llama_cpp.llama_vocab_get_add_bos(vocab), llama_cpp.llama_vocab_bos(vocab)),
            eos=wanted(llama_cpp.llama_vocab_get_add_eos(vocab), eos),
            sep=wanted(llama_cpp.llama_vocab_get_add_sep(vocab), llama_cpp.llama_vocab_sep(vocab)),
        )

    def render(self, query: str, document: str) -> str:
        """The template with both placeholders filled in one pass (a query that contains
        `{document}` stays as written)."""
        assert self.template is not None
        values = {"{query}": query, "{document}": document}
        return _PLACEHOLDER.sub(lambda match: values[match.group(0)], self.template)

    def join(self, query: list[int], document: list[int]) -> list[int]:
        """The pair's tokens from the query's and the document's own (no special tokens)."""
        tokens = [] if self.bos is None else [self.bos]
        tokens += query
        if self.eos is not None:
            tokens.append(self.eos)
        if self.sep is not None:
            tokens.append(self.sep)
        tokens += document
        if self.eos is not None:
            tokens.append(self.eos)
        return tokens


def relevance(outputs: np.ndarray, raw: bool = False) -> list[float]:
    """One score per row of the classification head's outputs (`n_cls_out` columns).

    A single-logit head (BERT and XLM-RoBERTa cross-encoders, bge-reranker) gives a logit:
    passed through a sigmoid into (0, 1) as Cohere, Jina, TEI and vLLM answer, unless `raw`
    (llama-server answers the logit). A head with several labels (Qwen3-Reranker's yes/no) is
    already a softmax in llama.cpp: the first label's probability is the score.
    """
    first = outputs[:, 0].astype(float)
    if raw or outputs.shape[1] != 1:
        return first.tolist()
    return [_sigmoid(x) for x in first]


def _sigmoid(x: float) -> float:
    # Written for both signs, so a large |x| neither overflows nor rounds badly.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass
class Ranking:
    scores: list[float]  # one per document, in the documents' order
    prompt_tokens: int  # every pair's tokens
    batches: int  # llama_decode calls made
