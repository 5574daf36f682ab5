"""POST /tokenize and /detokenize (also under /v1/), in llama-server's shapes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core import tokens as core
from ..openai.http import keep_alive_of, parse_request, runtime
from .schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)


def piece_of(text: bytes) -> str | list[int]:
    """A piece as llama-server writes it: its text, or its bytes when they are not valid UTF-8
    (part of a character that the next token completes)."""
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return list(text)


async def tokenize(request: Request) -> Response:
    body = await parse_request(request, TokenizeRequest)
    wanted = core.TokenizeRequest(body.model, body.content, body.add_special,
                                  body.parse_special, keep_alive_of(request))
    if body.with_pieces:
        pieces = await core.tokenize_pieces(wanted, runtime(request))
        answer = TokenizeResponse(tokens=[TokenPiece(id=p.id, piece=piece_of(p.text))
                                          for p in pieces])
    else:
        answer = TokenizeResponse(tokens=await core.tokenize(wanted, runtime(request)))
    return JSONResponse(answer.model_dump())


async def detokenize(request: Request) -> Response:
    body = await parse_request(request, DetokenizeRequest)
    wanted = core.DetokenizeRequest(body.model, body.tokens, keep_alive_of(request))
    content = await core.detokenize(wanted, runtime(request))
    return JSONResponse(DetokenizeResponse(content=content).model_dump())
