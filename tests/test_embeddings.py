"""POST /v1/embeddings: a tiny BERT embedder built here with `gguf`, served as `bge-m3`, and
SmolLM2 (a chat model) in embedding mode, through the official openai client and raw HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import numpy as np
import openai
import pytest
from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

from llamaserve.engine.embedding import pack_batches

from .builders import CLS_ID, SEP_ID, WORDS, bert_vocab, write_tiny_bert
from .conftest import LiveServer, assert_openai_error, start_server

EMBEDDINGS = "/v1/embeddings"
WIDTH = 64  # the tiny BERT's embedding length
CONTEXT = 128  # and its training context
TEXTS = ["hello world", "the cat and the dog", "a bird in the tree", "blue sky"]


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(
        tmp_path_factory.mktemp("bert") / "tiny-bert.gguf", width=WIDTH, context=CONTEXT
    )


@pytest.fixture(scope="module")
def bert_server(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    LiveServer
]:
    """The tiny BERT served from its path under the seed's model name."""
    live = start_server(
        [str(tiny_bert_path), "--alias", "bge-m3"],
        tmp_path_factory.mktemp("bert-server"),
        env={"LLAMASERVE_THREADS": "1"},
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def bert(bert_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=bert_server.v1, api_key="IGNORED", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def bert_http(bert_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bert_server.base_url, timeout=60) as raw:
        yield raw


def embed(http: httpx.Client, input: object, **fields: object) -> np.ndarray:
    """Float vectors from a raw request, as a (n, width) array."""
    response = http.post(EMBEDDINGS, json={"model": "bge-m3", "input": input, **fields})
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


def token_ids(text: str) -> list[int]:
    """What llama.cpp's WordPiece tokenizer makes of `text` with the tiny vocabulary."""
    vocab = {token: i for i, token in enumerate(bert_vocab())}
    return [CLS_ID, *(vocab["\u2581" + word] for word in text.split()), SEP_ID]


def reference_embeddings(path: Path, n_ctx: int, pooling: int | None = None) -> np.ndarray:
    """TEXTS embedded in this process by llama-cpp-python's own `Llama.embed`."""
    options = {} if pooling is None else {"pooling_type": pooling}
    llama = Llama(str(path), embedding=True, n_ctx=n_ctx, n_threads=1, n_threads_batch=1,
                  verbose=False, **options)
    try:
        return np.array(llama.embed(TEXTS, normalize=True))
    finally:
        llama.close()


# ---------------------------------------------------------------------------- input forms


def test_seed_request_answers_under_the_name_bge_m3(bert_http: httpx.Client) -> None:
    response = bert_http.post(EMBEDDINGS, json={"model": "bge-m3", "input": "Embedding text..."})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "bge-m3"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0)]
    assert len(body["data"][0]["embedding"]) == WIDTH
    # [CLS] embedding text . . . [SEP]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


def test_string_input_gives_one_unit_vector(bert: openai.OpenAI) -> None:
    result = bert.embeddings.create(model="bge-m3", input="hello world", encoding_format="float")
    assert len(result.data) == 1
    vector = np.array(result.data[0].embedding)
    assert vector.shape == (WIDTH,)
    assert np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 4


def test_list_of_strings_keeps_input_order(bert: openai.OpenAI, bert_http: httpx.Client) -> None:
    result = bert.embeddings.create(model="bge-m3", input=TEXTS, encoding_format="float")
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    batched = np.array([d.embedding for d in result.data])
    singles = np.concatenate([embed(bert_http, text) for text in TEXTS])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert result.usage.prompt_tokens == sum(len(token_ids(text)) for text in TEXTS)


def test_token_ids_embed_like_the_text_they_spell(bert_http: httpx.Client) -> None:
    ids = token_ids("hello world")
    np.testing.assert_allclose(embed(bert_http, ids), embed(bert_http, "hello world"), atol=1e-5)


def test_list_of_token_id_lists_embeds_each(bert_http: httpx.Client) -> None:
    lists = [token_ids(text) for text in TEXTS]
    np.testing.assert_allclose(embed(bert_http, lists), embed(bert_http, TEXTS), atol=1e-5)


def test_identical_inputs_give_identical_vectors(bert_http: httpx.Client) -> None:
    assert np.array_equal(embed(bert_http, "blue sky")[0], embed(bert_http, "blue sky")[0])
    # In one batch the same text sits at another offset: equal up to float summation order.
    vectors = embed(bert_http, ["hello world", "blue sky", "hello world"])
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_many_inputs_span_several_batches_in_order(bert_http: httpx.Client) -> None:
    # 2048 inputs of 3-5 tokens overflow the 128-token batch dozens of times.
    texts = [f"{a} {b}" for a in WORDS[:64] for b in WORDS[64:96]]
    vectors = embed(bert_http, texts)
    assert vectors.shape == (2048, WIDTH)
    picks = [0, 700, 2047]
    np.testing.assert_allclose(vectors[picks], embed(bert_http, [texts[i] for i in picks]),
                               atol=1e-5)


def test_batches_pack_inputs_in_order_within_limits() -> None:
    assert [list(r) for r in pack_batches([3, 3, 3, 3], 7, 10)] == [[0, 1], [2, 3]]
    assert [list(r) for r in pack_batches([1] * 5, 100, 2)] == [[0, 1], [2, 3], [4]]
    assert [list(r) for r in pack_batches([7, 1, 6], 7, 10)] == [[0], [1, 2]]
    assert list(pack_batches([], 7, 10)) == []


# ---------------------------------------------------------------------------- encodings, sizes


def test_base64_decodes_to_the_float_vector(bert: openai.OpenAI, bert_http: httpx.Client) -> None:
    floats = embed(bert_http, TEXTS)
    response = bert_http.post(
        EMBEDDINGS, json={"model": "bge-m3", "input": TEXTS, "encoding_format": "base64"}
    )
    raw = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
           for d in response.json()["data"]]
    np.testing.assert_array_equal(np.array(raw), floats.astype(np.float32))
    # The Python client asks for base64 when no format is given, and decodes it itself.
    decoded = bert.embeddings.create(model="bge-m3", input=TEXTS)
    np.testing.assert_array_equal(np.array([d.embedding for d in decoded.data], np.float32),
                                  floats.astype(np.float32))


def test_dimensions_truncates_and_renormalises(
    bert: openai.OpenAI, bert_http: httpx.Client
) -> None:
    full = embed(bert_http, "hello world")[0]
    result = bert.embeddings.create(
        model="bge-m3", input="hello world", dimensions=16, encoding_format="float"
    )
    short = np.array(result.data[0].embedding)
    assert short.shape == (16,)
    assert np.linalg.norm(short) == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(short, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)


# ---------------------------------------------------------------------------- pooling


def test_embedding_model_pools_as_its_metadata_asks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("cls")
    path = write_tiny_bert(directory / "cls-bert.gguf", pooling=gguf.PoolingType.CLS, seed=1)
    live = start_server([str(path)], directory, env={"LLAMASERVE_THREADS": "1"})
    try:
        with httpx.Client(base_url=live.base_url, timeout=60) as http:
            response = http.post(EMBEDDINGS, json={"model": "cls-bert", "input": TEXTS})
            assert response.status_code == 200, response.text
            served = np.array([d["embedding"] for d in response.json()["data"]])
    finally:
        live.stop()
    # llama-cpp-python on its own, with the pooling the header asks for, is the reference.
    expected = reference_embeddings(path, CONTEXT)
    mean_pooled = reference_embeddings(path, CONTEXT, LLAMA_POOLING_TYPE_MEAN)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert not np.allclose(served, mean_pooled, atol=1e-3)


def test_chat_model_gives_mean_pooled_unit_vectors_and_still_chats(
    client: openai.OpenAI, smollm2_path: Path
) -> None:
    result = client.embeddings.create(model="smollm2", input=TEXTS, encoding_format="float")
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (len(TEXTS), 576)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    expected = reference_embeddings(smollm2_path, 512, LLAMA_POOLING_TYPE_MEAN)
    np.testing.assert_allclose(vectors, expected, atol=2e-3)  # quantised matmuls, other batch
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    assert chat.choices[0].message.content


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body",
    [
        {"input": ""},
        {"input": []},
        {"input": ["hello", ""]},
        {"input": [[2, 3], []]},
        {"input": 5},
        {"input": None},
        {"input": {"text": "hello"}},
        {"input": [True, False]},
        {"input": [1.5, 2]},
        {"input": ["hello", 3]},
        {"input": ["x"] * 2049},
    ],
)
def test_bad_input_is_400(bert_http: httpx.Client, body: dict) -> None:
    error = assert_openai_error(bert_http.post(EMBEDDINGS, json={"model": "bge-m3", **body}), 400)
    assert error["param"] == "input", error


@pytest.mark.parametrize("ids", [[2, 100_000, 3], [-1]])
def test_token_id_outside_the_vocabulary_is_400(bert_http: httpx.Client, ids: list[int]) -> None:
    body = {"model": "bge-m3", "input": [[2, 3], ids]}
    error = assert_openai_error(bert_http.post(EMBEDDINGS, json=body), 400)
    assert error["param"] == "input" and "input[1]" in error["message"]
    assert "vocabulary" in error["message"]


def test_input_longer_than_the_context_is_400_naming_it(bert_http: httpx.Client) -> None:
    body = {"model": "bge-m3", "input": ["hello", "the cat " * CONTEXT]}
    error = assert_openai_error(bert_http.post(EMBEDDINGS, json=body), 400)
    assert "input[1]" in error["message"] and str(CONTEXT) in error["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"dimensions": WIDTH + 1}, "dimensions"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"model": 7}, "model"),
    ],
)
def test_bad_field_is_400_naming_it(bert_http: httpx.Client, change: dict, param: str) -> None:
    body = {"model": "bge-m3", "input": "hello", **change}
    error = assert_openai_error(bert_http.post(EMBEDDINGS, json=body), 400)
    assert error["param"] == param, error


def test_unknown_model_is_404(bert: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        bert.embeddings.create(model="text-embedding-3-small", input="hello")
    assert caught.value.code == "model_not_found"


def test_chat_with_an_embedding_model_is_400(bert: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        bert.chat.completions.create(
            model="bge-m3", messages=[{"role": "user", "content": "hello"}]
        )
    assert "embedding model" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        bert.completions.create(model="bge-m3", prompt="hello")


def test_trailing_slash_route_answers_directly(bert_server: LiveServer) -> None:
    response = httpx.post(
        f"{bert_server.base_url}/v1/embeddings/", json={"model": "bge-m3", "input": "hi"}
    )
    assert response.status_code == 200, response.text
