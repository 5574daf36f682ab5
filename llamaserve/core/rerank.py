"""Reranking: the documents' relevance to a query from a served reranker, best first."""

from __future__ import annotations

from dataclasses import dataclass

from .run import Runtime


@dataclass(frozen=True)
class RerankRequest:
    model: str | None  # None: the only served model
    query: str
    documents: list[str]
    top_n: int | None = None  # None: every document
    raw_scores: bool = False  # the classification head's logit, as llama-server answers
    keep_alive: float | None = None


@dataclass(frozen=True)
class RankedDocument:
    index: int  # in the request's documents
    relevance_score: float


@dataclass(frozen=True)
class RerankResult:
    model: str
    results: list[RankedDocument]  # best first; ties keep the documents' order
    prompt_tokens: int


async def rerank(request: RerankRequest, runtime: Runtime) -> RerankResult:
    name = runtime.manager.named(request.model)
    accounting = runtime.state.setdefault("usage", {"model": name})
    async with runtime.manager.use(name, request.keep_alive, task="rerank") as model:
        assert model.embedder is not None
        ranking = await model.embedder.rerank(request.query, request.documents,
                                              raw=request.raw_scores)
        model_id = model.spec.id
    runtime.metrics.prompt_tokens.labels(model_id).inc(ranking.prompt_tokens)
    accounting["prompt_tokens"] = ranking.prompt_tokens
    order = sorted(range(len(ranking.scores)), key=lambda i: -ranking.scores[i])
    if request.top_n is not None:
        order = order[:request.top_n]
    return RerankResult(name, [RankedDocument(i, ranking.scores[i]) for i in order],
                        ranking.prompt_tokens)
