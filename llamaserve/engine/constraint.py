"""JSON schemas enforced token by token with llguidance.

llama-cpp-python's `json_schema_to_gbnf` is an old copy of llama.cpp's converter (it lets raw
control characters into strings and ignores minimum/maximum), so schemas are compiled by
llguidance instead, the library llama.cpp itself can use. Each constrained sequence has an
`LLMatcher`: before a token is sampled, its mask of allowed tokens is applied to that
sequence's row of logits in place (disallowed tokens get -inf), so llama.cpp's sampler chain
(penalties, top-k/p, temperature, seed) then samples among the allowed tokens only; the sampled
token is fed back to the matcher.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import llama_cpp
import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab

from .grammar import explain_compile_error, strict_formats
from .types import EngineError, JsonSchema

logger = logging.getLogger(__name__)

# Between JSON tokens at most one space, so the JSON is compact. llguidance's default (any run
# of whitespace) lets a small model at a high temperature pad its output with blank lines and
# indents until max_tokens; even llama.cpp's bounded newline and indent after every token
# doubles the tokens of nested output (SmolLM2, temperature 1.2: a recursive schema finished
# within 240 tokens 7 times in 12 that way, 12 in 12 compact). A schema's own "x-guidance"
# options may choose otherwise.
JSON_OPTIONS = {"whitespace_pattern": r"\x20"}


class TokenConstraint:
    """One sequence's matcher: which tokens may come next, and what has come so far."""

    def __init__(self, matcher: LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bitmask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)

    def mask(self, row: np.ndarray) -> None:
        """Set the logits of every token the schema does not allow next to -inf, in place."""
        matcher = self._matcher
        matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if matcher.is_error():
            raise EngineError(f"the JSON schema could not be followed: {matcher.get_error()}")
        # One bit per token, little-endian within each 32-bit word (as are all our targets).
        allowed = np.unpackbits(self._bitmask.view(np.uint8), count=self._n_vocab,
                                bitorder="little")
        row[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        """Advance past a sampled token (one the last mask allowed)."""
        if not self._matcher.consume_token(token):
            raise EngineError("the sampled token does not fit the JSON schema (a logit_bias "
                              f"may exclude every token it allows): {self._matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """The value is complete and nothing may follow it but the end of generation."""
        return self._matcher.is_stopped()


class SchemaCompiler:
    """Compiles JSON schemas for one model. The llguidance tokenizer (a scan of the whole
    vocabulary, ~0.3-1 s) is built on first use, on the prompt thread, and then reused."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int) -> None:
        self._vocab = vocab  # the model's: it outlives every job
        self._n_vocab = n_vocab
        self._tokenizer: LLTokenizer | None = None
        self._lock = threading.Lock()

    def tokenizer(self) -> LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                started = time.monotonic()
                vocab, n_vocab = self._vocab, self._n_vocab
                # The schema allows its end-of-text token(s) only once the value is complete;
                # they must be tokens the engine ends a generation on, so all of llama.cpp's
                # end-of-generation tokens are given (SmolLM2: <|endoftext|>, <|im_end|>, ...).
                eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
                if not eog:
                    eog = [llama_cpp.llama_vocab_eos(vocab)]
                self._tokenizer = lltokenizer_from_vocab(vocab, n_vocab=n_vocab, eos_token=eog)
                logger.info("llguidance tokenizer built in %.2f s (%d tokens, end tokens %s)",
                            time.monotonic() - started, n_vocab, eog)
            return self._tokenizer

    def compile(self, spec: JsonSchema | None) -> TokenConstraint | None:
        """A fresh matcher for `spec`; an EngineError naming `spec.param` (a 400) when the
        schema uses something that cannot be enforced."""
        if spec is None:
            return None
        try:
            # A schema's own "x-guidance" options may change the whitespace, never leniency:
            # a keyword llguidance cannot enforce is an error, not silently ignored.
            grammar = LLMatcher.grammar_from_json_schema(
                json.dumps(strict_formats(spec.schema)), defaults=JSON_OPTIONS,
                overrides={"lenient": False})
        except ValueError as exc:
            raise EngineError(f"invalid JSON schema: {exc}", param=spec.param) from exc
        matcher = LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise explain_compile_error(matcher.get_error(), spec)
        return TokenConstraint(matcher, self._n_vocab)
