"""POST /v1/rerank (also /rerank, /v1/reranking, /reranking, as llama-server answers them):
Jina's and Cohere's request shape, llama-server's answer with Jina's documents."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core import rerank as core
from ..openai.http import keep_alive_of, parse_request, runtime
from .schemas import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)


async def rerank(request: Request) -> Response:
    body = await parse_request(request, RerankRequest)
    documents = [d if isinstance(d, str) else d.text for d in body.documents]
    result = await core.rerank(
        core.RerankRequest(body.model, body.query, documents, body.top_n, body.raw_scores,
                           keep_alive_of(request)),
        runtime(request),
    )
    answer = RerankResponse(
        model=result.model,
        results=[
            RerankResult(
                index=ranked.index,
                relevance_score=ranked.relevance_score,
                document=RerankDocument(text=documents[ranked.index])
                if body.return_documents else None,
            )
            for ranked in result.results
        ],
        usage=RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )
    return JSONResponse(answer.model_dump(exclude_none=True))
