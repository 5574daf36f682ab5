"""Tokenizing and detokenizing with a served model's own vocabulary (clients count tokens and
build `logit_bias` maps with it), whatever the model's kind: chat, embedding or reranker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..engine.tokens import TokenizeInput, Vocabulary
from .run import Runtime


@dataclass(frozen=True)
class TokenizeRequest:
    model: str | None  # None: the only served model
    content: TokenizeInput
    add_special: bool = False  # the model's BOS/EOS as its tokenizer adds them
    parse_special: bool = True  # "<|im_start|>" in the text becomes its control token
    keep_alive: float | None = None


@dataclass(frozen=True)
class DetokenizeRequest:
    model: str | None
    tokens: Sequence[int]
    keep_alive: float | None = None


@dataclass(frozen=True)
class Piece:
    id: int
    text: bytes  # the token's bytes: a piece may be part of a UTF-8 character


@asynccontextmanager
async def vocabulary_of(
    runtime: Runtime, name: str | None, keep_alive: float | None
) -> AsyncIterator[Vocabulary]:
    """The vocabulary of the model named (loaded if it is not), held while the block runs."""
    name = runtime.manager.named(name)
    runtime.state.setdefault("usage", {"model": name})
    async with runtime.manager.use(name, keep_alive, task="tokenize") as model:
        context = model.engine if model.engine is not None else model.embedder
        assert context is not None
        yield context.vocabulary


async def tokenize(request: TokenizeRequest, runtime: Runtime) -> list[int]:
    async with vocabulary_of(runtime, request.model, request.keep_alive) as vocabulary:
        return await vocabulary.tokenize(request.content, add_special=request.add_special,
                                         parse_special=request.parse_special)


async def tokenize_pieces(request: TokenizeRequest, runtime: Runtime) -> list[Piece]:
    async with vocabulary_of(runtime, request.model, request.keep_alive) as vocabulary:
        tokens = await vocabulary.tokenize(request.content, add_special=request.add_special,
                                           parse_special=request.parse_special)
        pieces = await vocabulary.pieces(tokens)
    return [Piece(token, text) for token, text in zip(tokens, pieces, strict=True)]


async def detokenize(request: DetokenizeRequest, runtime: Runtime) -> str:
    """The tokens' text; bytes that are not valid UTF-8 (a character cut between tokens)
    become U+FFFD."""
    async with vocabulary_of(runtime, request.model, request.keep_alive) as vocabulary:
        text = await vocabulary.detokenize(request.tokens)
    return text.decode("utf-8", errors="replace")
