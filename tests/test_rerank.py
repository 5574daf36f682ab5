"""POST /v1/rerank (and /rerank, /v1/reranking, /reranking): a tiny BERT cross-encoder built
here with `gguf` (rank pooling, a classification head), served beside the tiny BERT embedder,
scored by llama.cpp for real and checked against llama-cpp-python running the same pairs one at
a time; SmolLM2 (a chat model) asked to rerank. Also /tokenize on the embedding-only models."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import llama_cpp
import numpy as np
import pytest
from llama_cpp import Llama

from llamaserve.engine.embedding import Embedder, pack_batches
from llamaserve.engine.options import LoadOptions
from llamaserve.engine.rerank import PairFormat, relevance

from .builders import CLS_ID, SEP_ID, bert_vocab, write_tiny_bert
from .conftest import LiveServer, assert_openai_error, start_server

CONTEXT = 128  # the tiny models' training context: one pair must fit in it
QUERY = "the cat and the dog"
DOCUMENTS = ["a bird in the tree", "the cat is on the house", "blue sky", "the dog and the cat",
             "hot coffee and bread", "music"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rerank-models")
    write_tiny_bert(directory / "tiny-reranker.gguf", context=CONTEXT,
                    pooling=gguf.PoolingType.RANK)
    write_tiny_bert(directory / "tiny-bert.gguf", context=CONTEXT)
    return directory


@pytest.fixture(scope="module")
def rerank_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    LiveServer
]:
    """The reranker and an embedder, served together under their file names."""
    live = start_server(
        [str(models_dir / "tiny-reranker.gguf"), str(models_dir / "tiny-bert.gguf")],
        tmp_path_factory.mktemp("rerank-server"),
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def rr(rerank_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rerank_server.base_url, timeout=60) as raw:
        yield raw


def rerank(http: httpx.Client, path: str = "/v1/rerank", **fields: object) -> dict:
    body = {"model": "tiny-reranker", "query": QUERY, "documents": DOCUMENTS, **fields}
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def words(text: str) -> list[int]:
    vocab = {token: i for i, token in enumerate(bert_vocab())}
    return [vocab["\u2581" + word] for word in text.split()]


def pair_tokens(query: str, document: str) -> list[int]:
    """llama-server's pair for a WordPiece BERT: [CLS] query [SEP] document."""
    return [CLS_ID, *words(query), SEP_ID, *words(document)]


def reference_logits(path: Path, pairs: list[list[int]]) -> list[float]:
    """Each pair decoded alone by llama-cpp-python's bindings: the head's output for seq 0."""
    llama = Llama(str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
                  n_ctx=CONTEXT, n_batch=CONTEXT, n_ubatch=CONTEXT, n_threads=1,
                  n_threads_batch=1, verbose=False)
    try:
        ctx = llama._ctx.ctx
        logits = []
        for pair in pairs:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            tokens = (llama_cpp.llama_token * len(pair))(*pair)
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens,
                                                                              len(pair))) == 0
            logits.append(float(llama_cpp.llama_get_embeddings_seq(ctx, 0)[0]))
        return logits
    finally:
        llama.close()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- the answer ------------------------------------------------------------------------------


def test_scores_are_llama_cpps_for_each_pair(rr: httpx.Client, models_dir: Path) -> None:
    logits = reference_logits(models_dir / "tiny-reranker.gguf",
                              [pair_tokens(QUERY, d) for d in DOCUMENTS])
    scores = {r["index"]: r["relevance_score"] for r in rerank(rr)["results"]}
    assert sorted(scores) == list(range(len(DOCUMENTS)))
    for index, logit in enumerate(logits):
        assert scores[index] == pytest.approx(sigmoid(logit), abs=1e-5)
    raw = {r["index"]: r["relevance_score"] for r in rerank(rr, raw_scores=True)["results"]}
    assert [raw[i] for i in range(len(DOCUMENTS))] == pytest.approx(logits, abs=1e-4)
    assert len(set(scores.values())) == len(DOCUMENTS)  # different documents, different scores


def test_results_are_sorted_best_first_with_documents(rr: httpx.Client) -> None:
    answer = rerank(rr)
    assert answer["model"] == "tiny-reranker" and answer["object"] == "list"
    results = answer["results"]
    scores = [r["relevance_score"] for r in results]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    for result in results:
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}


def test_top_n_keeps_the_best(rr: httpx.Client) -> None:
    everything = rerank(rr)["results"]
    assert rerank(rr, top_n=2)["results"] == everything[:2]
    assert rerank(rr, top_n=100)["results"] == everything


def test_return_documents_false_leaves_them_out(rr: httpx.Client) -> None:
    for result in rerank(rr, return_documents=False)["results"]:
        assert set(result) == {"index", "relevance_score"}


def test_document_objects_score_as_their_text(rr: httpx.Client) -> None:
    objects = [{"text": d} for d in DOCUMENTS]
    assert rerank(rr, documents=objects)["results"] == rerank(rr)["results"]


def test_usage_counts_every_pairs_tokens(rr: httpx.Client) -> None:
    expected = sum(len(pair_tokens(QUERY, d)) for d in DOCUMENTS)
    assert rerank(rr)["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


@pytest.mark.parametrize("path", ["/rerank", "/v1/reranking", "/reranking", "/v1/rerank/"])
def test_llama_server_and_jina_route_names(rr: httpx.Client, path: str) -> None:
    assert rerank(rr, path)["results"] == rerank(rr)["results"]


def test_empty_texts_still_score(rr: httpx.Client) -> None:
    results = rerank(rr, query="", documents=["", "cat"])["results"]
    assert sorted(r["index"] for r in results) == [0, 1]


# -- refusals --------------------------------------------------------------------------------


def test_a_chat_model_asked_to_rerank_is_400(http: httpx.Client) -> None:
    error = assert_openai_error(http.post("/v1/rerank", json={
        "model": "smollm2", "query": "q", "documents": ["d"]}), 400)
    assert error["code"] == "model_not_supported" and error["param"] == "model"
    assert "not a reranker" in error["message"]


def test_an_embedding_model_asked_to_rerank_is_400(rr: httpx.Client) -> None:
    error = assert_openai_error(rr.post("/v1/rerank", json={
        "model": "tiny-bert", "query": "q", "documents": ["d"]}), 400)
    assert "embedding model, not a reranker" in error["message"]


@pytest.mark.parametrize("path, body", [
    ("/v1/embeddings", {"input": "cat"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_reranker_asked_for_embeddings_or_chat_is_400(rr: httpx.Client, path, body) -> None:
    error = assert_openai_error(rr.post(path, json={"model": "tiny-reranker", **body}), 400)
    assert "is a reranker" in error["message"] and error["param"] == "model"


@pytest.mark.parametrize("body, param", [
    ({"documents": []}, "documents"),
    ({"documents": "one string"}, "documents"),
    ({"documents": [{"title": "no text"}]}, "documents[0]"),
    ({"documents": [3]}, "documents[0]"),
    ({"query": None}, "query"),
    ({"top_n": 0}, "top_n"),
    ({"top_n": 1.5}, "top_n"),
])
def test_malformed_requests_are_400(rr: httpx.Client, body: dict, param: str) -> None:
    full = {"model": "tiny-reranker", "query": "q", "documents": ["d"], **body}
    error = assert_openai_error(rr.post("/v1/rerank", json=full), 400)
    assert error["param"].startswith(param)


def test_a_pair_longer_than_the_context_is_400_naming_the_document(rr: httpx.Client) -> None:
    long = " ".join(["cat"] * (CONTEXT + 10))
    error = assert_openai_error(rr.post("/v1/rerank", json={
        "model": "tiny-reranker", "query": "q", "documents": ["cat", long]}), 400)
    assert error["param"] == "documents[1]" and str(CONTEXT) in error["message"]


def test_model_must_be_named_when_several_are_served(rr: httpx.Client) -> None:
    error = assert_openai_error(rr.post("/v1/rerank", json={"query": "q", "documents": ["d"]}),
                                400)
    assert error["code"] == "model_required"
    assert "tiny-reranker" in error["message"] and "tiny-bert" in error["message"]


def test_model_may_be_left_out_when_one_is_served(http: httpx.Client) -> None:
    # The SmolLM2 server serves one model: it is the one asked (and it is not a reranker).
    error = assert_openai_error(http.post("/rerank", json={"query": "q", "documents": ["d"]}),
                                400)
    assert "'smollm2'" in error["message"] and "not a reranker" in error["message"]


# -- tokenizing with embedding-only models --------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-reranker", "tiny-bert"])
def test_embedding_only_models_tokenize(rr: httpx.Client, model: str) -> None:
    response = rr.post("/tokenize", json={"model": model, "content": "hello world",
                                          "add_special": True, "with_pieces": True})
    assert response.status_code == 200, response.text
    pieces = response.json()["tokens"]
    assert [p["id"] for p in pieces] == [CLS_ID, *words("hello world"), SEP_ID]
    assert [p["piece"] for p in pieces] == ["[CLS]", " hello", " world", "[SEP]"]
    content = rr.post("/detokenize", json={"model": model, "tokens": words("hello world")})
    assert content.json() == {"content": " hello world"}


# -- in process: batching, and the pure parts -----------------------------------------------


def test_many_documents_are_scored_in_as_few_decodes_as_fit(models_dir: Path) -> None:
    documents = [f"the {w} and the dog" for w in ["cat", "bird", "fish", "tree"] * 16]
    embedder = Embedder.load(models_dir / "tiny-reranker.gguf",
                             LoadOptions(n_ctx=CONTEXT, n_threads=1), chat_model=False)
    try:
        ranking = asyncio.run(embedder.rerank("the cat", documents))
    finally:
        embedder.close()
    pairs = [pair_tokens("the cat", d) for d in documents]
    lengths = [len(p) for p in pairs]
    assert ranking.batches == len(list(pack_batches(lengths, CONTEXT, CONTEXT))) == \
        math.ceil(sum(lengths) / CONTEXT)  # 64 pairs of 9 tokens, 14 to a 128-token batch
    logits = reference_logits(models_dir / "tiny-reranker.gguf", pairs[:4])
    assert ranking.scores[:4] == pytest.approx([sigmoid(x) for x in logits], abs=1e-5)


def test_pair_format_follows_llama_server() -> None:
    bert = PairFormat(bos=101, sep=102)
    assert bert.join([1, 2], [3]) == [101, 1, 2, 102, 3]
    xlm_roberta = PairFormat(bos=0, eos=2, sep=2)
    assert xlm_roberta.join([5], [6, 7]) == [0, 5, 2, 2, 6, 7, 2]
    assert PairFormat().join([1], [2]) == [1, 2]


def test_rerank_template_fills_both_placeholders_once() -> None:
    template = PairFormat(template="<Query>: {query}\n<Document>: {document}")
    assert template.render("what is {document}?", "a {query}") == \
        "<Query>: what is {document}?\n<Document>: a {query}"


def test_relevance_is_a_sigmoid_of_one_logit_else_the_first_label() -> None:
    logits = np.array([[0.0], [2.0], [-800.0]], dtype=np.float32)
    assert relevance(logits) == pytest.approx([0.5, sigmoid(2.0), 0.0])
    assert relevance(logits, raw=True) == pytest.approx([0.0, 2.0, -800.0])
    yes_no = np.array([[0.9, 0.1]], dtype=np.float32)  # Qwen3-Reranker: softmax in llama.cpp
    assert relevance(yes_no) == pytest.approx([0.9])
