"""llama.cpp sampler chains and token log-probabilities for one request."""

from __future__ import annotations

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaContext, LlamaSampler

from .tokens import Vocabulary
from .types import EngineError, SamplingParams, TokenLogprob

PENALTY_LAST_N = 64  # llama-cpp-python's default window for repeat/frequency/presence penalties


class GreedySampler:
    """Temperature 0 without penalties or a grammar: the first token of highest logit after
    the logit bias, as llama.cpp's logit-bias → greedy chain picks it (float32 sums, first
    index on ties), read straight off the logits row. The chain's C sampler copies the whole
    vocabulary into a candidates array per token (~50 µs with SmolLM2's 49,152 tokens, and a
    GIL round trip per call); this takes ~8 µs, and the decode loop runs it every token."""

    def __init__(self, n_vocab: int, logit_bias: dict[int, float]) -> None:
        self.n_vocab = n_vocab
        biased = sorted((t, b) for t, b in logit_bias.items() if 0 <= t < n_vocab)
        self._tokens = np.array([t for t, _ in biased], dtype=np.intp)
        self._bias = np.array([b for _, b in biased], dtype=np.float32)

    def choose(self, row: np.ndarray) -> int:
        """The token for a logits row (left as it was)."""
        if not len(self._tokens):
            return int(np.argmax(row))
        kept = row[self._tokens]  # a copy: the row is put back exactly as it was
        row[self._tokens] = kept + self._bias
        try:
            return int(np.argmax(row))
        finally:
            row[self._tokens] = kept

    def sample(self, context: LlamaContext, index: int) -> int:
        pointer = context.get_logits_ith(index)
        return self.choose(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))

    def close(self) -> None:
        pass


def build_sampler(
    llama: Llama, params: SamplingParams, grammar: str | None, prompt: list[int]
) -> LlamaSampler | GreedySampler:
    """The chain llama.cpp samples each token with: bias → penalties → grammar → choice.

    The penalties see the end of the prompt as already-seen text, as llama-server does, so a
    frequency or repeat penalty also discourages repeating the prompt. Plain greedy decoding
    (no penalty, no grammar) takes the same choice without the chain (GreedySampler).
    """
    n_vocab = llama.n_vocab()
    if (params.temperature == 0 and grammar is None and params.repeat_penalty == 1.0
            and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0):
        return GreedySampler(n_vocab, params.logit_bias)
    seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
    sampler = LlamaSampler()
    if params.logit_bias:
        sampler.add_logit_bias(n_vocab, params.logit_bias)
    penalties = llama_cpp.llama_sampler_init_penalties(
        n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty,
        params.presence_penalty,
    )
    llama_cpp.llama_sampler_chain_add(sampler.sampler, penalties)  # the chain owns it now
    for token in prompt[-PENALTY_LAST_N:]:
        llama_cpp.llama_sampler_accept(penalties, token)
    if grammar is not None:
        # llama-cpp-python's add_grammar hands a NULL sampler to the chain when the grammar
        # does not parse (a crash); check it here and answer 400 instead.
        grammar_sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar.encode("utf-8"), b"root"
        )
        if not grammar_sampler:
            sampler.close()
            raise EngineError("the grammar does not parse as GBNF", param="grammar")
        llama_cpp.llama_sampler_chain_add(sampler.sampler, grammar_sampler)
    if params.temperature == 0:
        sampler.add_greedy()
    elif params.mirostat_mode == 1:
        sampler.add_temp(params.temperature)
        sampler.add_mirostat(n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100)
    elif params.mirostat_mode == 2:
        sampler.add_temp(params.temperature)
        sampler.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
    else:
        sampler.add_top_k(params.top_k)
        sampler.add_typical(params.typical_p, 1)
        sampler.add_top_p(params.top_p, 1)
        sampler.add_min_p(params.min_p, 1)
        sampler.add_temp(params.temperature)
        sampler.add_dist(seed)
    return sampler


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LogprobReader:
    """Turns a row of logits into the OpenAI view: the chosen token's logprob and the top k."""

    def __init__(self, vocabulary: Vocabulary, top: int) -> None:
        self.vocabulary = vocabulary
        self.top = top

    def piece(self, token: int) -> tuple[str, bytes]:
        raw = self.vocabulary.known_piece(token, True)
        return raw.decode("utf-8", errors="replace"), raw

    def read(self, row: np.ndarray, token: int) -> TokenLogprob:
        logprobs = log_softmax(row.astype(np.float32))
        top: list[tuple[str, bytes, float]] = []
        if self.top:
            best = np.argpartition(-logprobs, self.top)[: self.top]
            best = best[np.argsort(-logprobs[best])]
            top = [(*self.piece(int(t)), float(logprobs[t])) for t in best]
        text, raw = self.piece(token)
        return TokenLogprob(text, raw, float(logprobs[token]), top)
