"""A loaded model's vocabulary: text to token ids and back, as llama-server's /tokenize and
/detokenize do it, off the event loop.

Only the vocabulary is read (never the context), and llama.cpp's tokenizer is const once the
model is loaded, so these calls run on worker threads beside the model's own decoding.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Sequence
from functools import cached_property

import llama_cpp
from llama_cpp import Llama

from .types import EngineError

# What /tokenize accepts as content: a string, or strings and token ids mixed (llama-server's
# "mixed" prompts; only a leading string gets the special tokens).
TokenizeInput = str | Sequence[str | int]


class Vocabulary:
    """Tokenizing with one loaded model (its `Llama`, loaded with or without weights)."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama
        self._vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        self._bos = llama.token_bos()
        self._known: dict[int, bytes] = {}  # known_piece: token, or -1 - token unrendered

    async def tokenize(
        self, content: TokenizeInput, *, add_special: bool = False, parse_special: bool = True,
        param: str = "content",
    ) -> list[int]:
        """Token ids of `content`. `add_special`: the model's own BOS/EOS/SEP as its
        tokenizer adds them; `parse_special`: text like `<|im_start|>` becomes its control
        token rather than plain characters."""
        return await asyncio.to_thread(self.tokenize_now, content, add_special, parse_special,
                                       param)

    async def pieces(self, tokens: Sequence[int], param: str = "tokens") -> list[bytes]:
        """Each token's text (its bytes: a piece may be part of a UTF-8 character)."""
        self.check(tokens, param)
        return await asyncio.to_thread(lambda: [self.piece(t) for t in tokens])

    async def detokenize(self, tokens: Sequence[int], param: str = "tokens") -> bytes:
        """The text of `tokens`, control tokens included (as llama-server renders them)."""
        self.check(tokens, param)
        return await asyncio.to_thread(lambda: b"".join(self.piece(t) for t in tokens))

    # -- blocking parts (also used by the embedding context on its own thread) ---------------

    def check(self, tokens: Sequence[int], param: str) -> None:
        """EngineError naming the first token id outside the vocabulary (llama.cpp would abort
        on it)."""
        for index, token in enumerate(tokens):
            if not 0 <= token < self.n_vocab:
                raise self._not_a_token(f"{param}[{index}]", token)

    def tokenize_now(
        self, content: TokenizeInput, add_special: bool, parse_special: bool, param: str
    ) -> list[int]:
        if isinstance(content, str):
            return self.text_tokens(content, add_special, parse_special)
        tokens: list[int] = []
        for index, item in enumerate(content):
            if isinstance(item, str):
                tokens += self.text_tokens(item, add_special and index == 0, parse_special)
            elif 0 <= item < self.n_vocab:
                tokens.append(item)
            else:
                raise self._not_a_token(f"{param}[{index}]", item)
        return tokens

    @cached_property
    def longest_piece(self) -> int | None:
        """The most bytes one token stands for (special tokens included), for tokenizers
        whose tokens spell their input exactly (BPE, SentencePiece); None for those that
        normalise it (WordPiece and Unigram drop or fold characters). ~0.2 s for 49k tokens:
        read it at load."""
        kind = llama_cpp.llama_vocab_type(self._vocab)
        if kind not in (llama_cpp.LLAMA_VOCAB_TYPE_BPE, llama_cpp.LLAMA_VOCAB_TYPE_SPM):
            return None
        return max((len(self.piece(token)) for token in range(self.n_vocab)), default=0) or None

    def fewest_tokens(self, n_bytes: int) -> int:
        """A lower bound on the tokens of a text of `n_bytes` UTF-8 bytes, known without
        tokenizing it (0 when the tokenizer gives no bound): no token covers more bytes
        than the longest piece."""
        longest = self.longest_piece
        return 0 if longest is None else -(-n_bytes // longest)

    def is_single_token(self, text: str) -> bool:
        """Whether `text` is one token of its own (a control or added token such as
        `<think>`), rather than pieces of text."""
        return len(self.text_tokens(text, False, True)) == 1

    def _not_a_token(self, where: str, token: int) -> EngineError:
        return EngineError(f"{where} is {token}, which is not a token id of this model "
                           f"(0..{self.n_vocab - 1}).", param=where)

    def text_tokens(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_special,
                                    special=parse_special)

    def piece(self, token: int, special: bool = True) -> bytes:
        """One token's bytes; `special`: control tokens rendered, else they are empty.
        llama-cpp-python's own detokenize reads at most 32 bytes per token and returns
        nothing for a longer piece (47 of SmolLM2's tokens: runs of spaces, "----" lines)."""
        size = 32
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def known_piece(self, token: int, special: bool) -> bytes:
        """`piece`, remembered: generation asks for each token it emits (any thread)."""
        key = token if special else -1 - token
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self.piece(token, special)
        return found

    def text(self, tokens: Sequence[int]) -> bytes:
        """The text of `tokens` with control tokens left out, as llama-cpp-python's
        detokenize gives it (a BOS's leading space dropped) but whole for long pieces."""
        text = b"".join(self.known_piece(t, False) for t in tokens)
        if tokens and tokens[0] == self._bos and text[:1] == b" ":
            return text[1:]
        return text
