"""Pydantic models of llama-server's tokenize, detokenize and rerank bodies, field by field
(llama.cpp's tools/server: `post_tokenize`, `post_detokenize`, `post_rerank`), plus the Jina
and Cohere rerank fields its clients send (`documents` as `{text}` objects,
`return_documents`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

MAX_RERANK_DOCUMENTS = 1000  # Cohere's limit per request


class _Request(BaseModel):
    # Clients send their vendors' fields (Cohere's `max_chunks_per_doc`, Jina's `truncation`).
    model_config = ConfigDict(extra="allow")


class TokenizeRequest(_Request):
    model: str | None = None  # optional while one model is served, as llama-server serves one
    # A string, or strings and token ids mixed (llama-server's "mixed" prompt form).
    content: str | list[StrictInt | str]
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class TokenPiece(BaseModel):
    id: int
    # The token's text, or its bytes when they are not valid UTF-8 on their own.
    piece: str | list[int]


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[StrictInt]  # strict: true or 1.0 is not a token id


class DetokenizeResponse(BaseModel):
    content: str


class DocumentObject(_Request):
    text: str


class RerankRequest(_Request):
    model: str | None = None
    query: str
    documents: list[str | DocumentObject] = Field(min_length=1,
                                                  max_length=MAX_RERANK_DOCUMENTS)
    top_n: StrictInt | None = Field(default=None, ge=1)
    # Jina's default; Cohere's and TEI's is false. llama-server never returns them.
    return_documents: bool = True
    # TEI's switch: the head's logit as llama-server answers it, not a (0, 1) score.
    raw_scores: bool = False


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    results: list[RerankResult]
    usage: RerankUsage
