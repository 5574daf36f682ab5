"""Ollama's native API through the official `ollama` Python client and LangChain's ChatOllama,
against a live server running SmolLM2."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator

import httpx
import jsonschema
import ollama
import openai
import pytest

from .builders import IMAGE_SIZE, PATCH_SIZE, image_bytes
from .conftest import LiveServer

PROMPT = [{"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "num_predict": 12}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def api(server: LiveServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=120) as client:
        yield client


def error_of(call: object) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as caught:
        call()  # type: ignore[operator]
    return caught.value


# -- models ----------------------------------------------------------------------------------


def test_list_names_models_with_a_tag_and_gguf_details(api: ollama.Client) -> None:
    [model] = [m for m in api.list().models if m.model == "smollm2:latest"]
    assert model.size == 98_362_432 and len(model.digest) == 64
    assert model.details.format == "gguf" and model.details.family == "llama"
    assert model.details.parameter_size == "134.52M"  # as Ollama writes SmolLM2-135M's count
    assert model.details.quantization_level == "Q4_1"
    assert model.modified_at is not None


def test_show_reads_the_gguf_header(api: ollama.Client) -> None:
    shown = api.show("smollm2")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192  # trained; served: num_ctx
    assert shown.modelinfo["general.parameter_count"] == 134_515_008
    assert "<|im_start|>" in shown.template
    assert "num_ctx 1024" in shown.parameters and "temperature 0.2" in shown.parameters
    assert shown.details.quantization_level == "Q4_1" and shown.modified_at is not None
    assert error_of(lambda: api.show("nope")).status_code == 404


def test_tags_name_a_model_by_quantisation_or_size(api: ollama.Client) -> None:
    for name in ("smollm2:q4_1", "SmolLM2:134.52M", "smollm2"):
        assert api.show(name).details.family == "llama"
    error = error_of(lambda: api.show("smollm2:7b"))
    assert error.status_code == 404 and error.error == \
        "model 'smollm2:7b' not found, try pulling it first"


def test_ps_in_ollama_shape(api: ollama.Client) -> None:
    api.generate("smollm2", "")  # loaded
    [model] = api.ps().models
    assert model.name == model.model == "smollm2:latest"
    assert model.context_length == 1024 and model.size > 0 and model.size_vram == 0
    assert model.details.family == "llama" and len(model.digest) == 64


def test_version_root_probe_and_playground(server: LiveServer) -> None:
    version = httpx.get(f"{server.base_url}/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 5)  # what clients gate on
    probe = httpx.get(server.base_url + "/")
    assert probe.text == "Ollama is running" and probe.headers["content-type"].startswith(
        "text/plain")
    assert httpx.head(server.base_url + "/").status_code == 200
    page = httpx.get(server.base_url + "/", headers={"Accept": "text/html,*/*"})
    assert page.headers["content-type"].startswith("text/html")


# -- chat ------------------------------------------------------------------------------------


def test_chat(api: ollama.Client) -> None:
    reply = api.chat("smollm2", PROMPT, options=GREEDY)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason == "length" and reply.eval_count == 12


def test_chat_streamed_is_the_same_answer_in_pieces(api: ollama.Client) -> None:
    whole = api.chat("smollm2", PROMPT, options=GREEDY).message.content
    chunks = list(api.chat("smollm2", PROMPT, options=GREEDY, stream=True))
    assert len(chunks) > 3 and all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == whole
    assert chunks[-1].done_reason == "length" and chunks[-1].eval_count == 12


def test_counts_are_the_openai_usage_and_durations_are_measured(
    api: ollama.Client, client: openai.OpenAI
) -> None:
    reply = api.chat("smollm2", PROMPT, options=GREEDY)
    usage = client.chat.completions.create(model="smollm2", messages=PROMPT, temperature=0,
                                           max_tokens=12).usage
    assert (reply.prompt_eval_count, reply.eval_count) == (usage.prompt_tokens,
                                                           usage.completion_tokens)
    parts = [reply.load_duration, reply.prompt_eval_duration, reply.eval_duration]
    assert all(part > 0 for part in parts)
    assert sum(parts) <= reply.total_duration < 60e9
    assert reply.eval_duration > 12 * 1e5  # at least 0.1 ms a token: real time, not made up


def test_chat_format_schema_output_validates(api: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    reply = api.chat("smollm2", [{"role": "user", "content": "Describe a person."}],
                     format=schema, options={"temperature": 0, "num_predict": 100})
    jsonschema.validate(json.loads(reply.message.content), schema)
    ask = [{"role": "user", "content": "What is the capital of France? Reply in JSON."}]
    reply = api.chat("smollm2", ask, format="json", options={"temperature": 0,
                                                              "num_predict": 100})
    assert reply.done_reason == "stop" and isinstance(json.loads(reply.message.content), dict)


def test_tool_call_comes_back_with_arguments_as_an_object(api: ollama.Client) -> None:
    # SmolLM2 does not call tools reliably on its own: a format that forces the call's shape
    # makes it answer with one, which the server reads back as a tool call.
    shape = {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": "get_weather"},
        "arguments": WEATHER_TOOL["function"]["parameters"]}}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    for stream in (False, True):
        reply = api.chat("smollm2", ask, tools=[WEATHER_TOOL], format=shape, stream=stream,
                         options={"temperature": 0, "num_predict": 60})
        if stream:
            reply = next(chunk for chunk in reply if chunk.message.tool_calls)
        [call] = reply.message.tool_calls
        assert call.function.name == "get_weather"
        assert isinstance(call.function.arguments, dict) and "city" in call.function.arguments


def test_an_earlier_tool_call_and_its_result_are_accepted(api: ollama.Client) -> None:
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": '{"celsius": 21}'},
    ]
    reply = api.chat("smollm2", history, tools=[WEATHER_TOOL], options=GREEDY)
    assert reply.done and reply.prompt_eval_count > 20


def test_an_image_goes_to_the_vision_model(vision_server: LiveServer) -> None:
    vision = ollama.Client(host=vision_server.base_url, timeout=120)
    ask = {"role": "user", "content": "What is in this picture?"}
    plain = vision.chat("smollm2", [ask], options={"num_predict": 4})
    seen = vision.chat("smollm2", [{**ask, "images": [image_bytes("PNG")]}],
                       options={"num_predict": 4})
    assert seen.prompt_eval_count == plain.prompt_eval_count + (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1
    for fmt in ("JPEG", "WEBP", "GIF"):  # the media type is read from the bytes
        assert vision.generate("smollm2", "What is it?", images=[image_bytes(fmt)],
                               options={"num_predict": 2}).done
    error = error_of(lambda: vision.chat("smollm2", [{**ask, "images": [b"not an image"]}]))
    assert error.status_code == 400 and "messages[0].images[0]" in error.error


def test_logprobs(api: ollama.Client) -> None:
    reply = api.chat("smollm2", PROMPT, options=GREEDY, logprobs=True, top_logprobs=2)
    assert len(reply.logprobs) == 12 and len(reply.logprobs[0].top_logprobs) == 2
    assert "".join(entry.token for entry in reply.logprobs) == reply.message.content


# -- generate --------------------------------------------------------------------------------


def test_generate_plain_streamed_and_raw(
    api: ollama.Client, client: openai.OpenAI, tokenizer
) -> None:
    whole = api.generate("smollm2", "Why is the sky blue?", options=GREEDY)
    assert whole.response and whole.done_reason == "length" and whole.eval_count == 12
    chunks = list(api.generate("smollm2", "Why is the sky blue?", options=GREEDY, stream=True))
    assert "".join(c.response for c in chunks) == whole.response and chunks[-1].done
    raw = api.generate("smollm2", "1, 2, 3, 4,", raw=True, options=GREEDY)
    # the prompt's own tokens: no template around it
    assert raw.prompt_eval_count == len(tokenizer.tokenize(b"1, 2, 3, 4,", add_bos=False))
    # not raw: a one-turn chat, `system` its system message
    with_system = api.generate("smollm2", "Hi", system="Answer in French.", options=GREEDY)
    messages = [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hi"}]
    usage = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=1).usage
    assert with_system.prompt_eval_count == usage.prompt_tokens


def test_generate_suffix_needs_fill_in_the_middle_tokens(api: ollama.Client) -> None:
    error = error_of(lambda: api.generate("smollm2", "def add(a, b):", suffix="\n    return c"))
    assert error.status_code == 400 and "fill-in-the-middle" in error.error


def test_empty_prompt_loads_and_keep_alive_0_unloads(api: ollama.Client) -> None:
    try:
        assert api.generate("smollm2", "").done_reason == "load"
        assert [m.name for m in api.ps().models] == ["smollm2:latest"]
        assert api.generate("smollm2", "", keep_alive=0).done_reason == "unload"
        assert api.ps().models == []
        reloaded = api.chat("smollm2", PROMPT, options={"num_predict": 1})
        assert reloaded.load_duration > 1e7  # a real load: over 10 ms
    finally:
        api.generate("smollm2", "", keep_alive=-1)  # resident for the other tests again


# -- embeddings ------------------------------------------------------------------------------


def test_embed_two_inputs(api: ollama.Client) -> None:
    result = api.embed("smollm2", ["The sky is blue.", "Grass is green."])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576
    assert math.isclose(math.hypot(*result.embeddings[0]), 1, rel_tol=1e-4)
    assert result.prompt_eval_count > 6 and result.total_duration > 0
    assert len(api.embed("smollm2", "short", dimensions=64).embeddings[0]) == 64
    long = " ".join(["word"] * 2000)  # over the embedding window: cut, as Ollama's default
    assert len(api.embed("smollm2", long).embeddings) == 1
    assert error_of(lambda: api.embed("smollm2", long, truncate=False)).status_code == 400


def test_legacy_embeddings(api: ollama.Client) -> None:
    vector = api.embeddings("smollm2", "The sky is blue.").embedding
    assert len(vector) == 576
    same = api.embed("smollm2", "The sky is blue.").embeddings[0]
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(vector, same, strict=True))


# -- options and errors ----------------------------------------------------------------------


def test_num_ctx_over_the_loaded_context_is_refused(api: ollama.Client) -> None:
    error = error_of(lambda: api.chat("smollm2", PROMPT, options={"num_ctx": 4096}))
    assert error.status_code == 400 and "--ctx 4096" in error.error
    fits = api.chat("smollm2", PROMPT, options={"num_ctx": 512, "num_predict": 2,
                                                "repeat_last_n": 32, "num_gpu": 0,
                                                "made_up_option": True})
    assert fits.done  # smaller is accepted: the loaded context is used


def test_options_reach_the_sampler(api: ollama.Client) -> None:
    options = {"temperature": 1.5, "seed": 7, "top_k": 20, "top_p": 0.9, "min_p": 0.01,
               "repeat_penalty": 1.2, "num_predict": 10, "stop": ["\n"]}
    first = api.chat("smollm2", PROMPT, options=options).message.content
    assert api.chat("smollm2", PROMPT, options=options).message.content == first  # seeded
    assert "\n" not in first


def test_errors_are_in_ollama_shape(server: LiveServer) -> None:
    cases = [
        ("POST", "/api/chat", b'{"model": "nope", "messages": []}', 404),
        ("POST", "/api/chat", b"{", 400),
        ("POST", "/api/chat", b'{"messages": []}', 400),
        ("POST", "/api/chat", b'{"model": "smollm2", "messages": [{"role": "x"}]}', 400),
        ("POST", "/api/generate", b'{"model": "smollm2", "prompt": "x", "template": "t"}', 400),
        ("POST", "/api/embed", b'{"model": "smollm2", "input": 5}', 400),
        ("GET", "/api/chat", b"", 405),
        ("GET", "/api/nothing", b"", 404),
        ("POST", "/api/create", b'{"model": "x"}', 501),
        ("POST", "/api/push", b'{"model": "x"}', 501),
    ]
    for method, path, body, status in cases:
        response = httpx.request(method, server.base_url + path, content=body)
        assert response.status_code == status, (path, response.text)
        assert list(response.json()) == ["error"] and response.json()["error"], response.text


def test_copy_gives_the_model_another_name(api: ollama.Client) -> None:
    assert api.copy("smollm2", "my-smol").status == "success"
    assert "my-smol:latest" in [m.model for m in api.list().models]
    assert api.chat("my-smol:latest", PROMPT, options={"num_predict": 2}).done
    assert error_of(lambda: api.copy("nope", "other")).status_code == 404


def test_base64_images_are_sent_as_the_client_sends_them(server: LiveServer) -> None:
    # what the client puts on the wire: raw base64, no data: prefix
    body = {"model": "smollm2", "stream": False, "messages": [
        {"role": "user", "content": "hi", "images": [base64.b64encode(b"GIF89a...").decode()]}]}
    response = httpx.post(f"{server.base_url}/api/chat", json=body, timeout=60)
    assert response.status_code == 400 and "does not accept images" in response.json()["error"]


# -- LangChain -------------------------------------------------------------------------------


def test_langchain_chat_ollama_invoke_and_stream(server: LiveServer) -> None:
    chat_ollama = pytest.importorskip("langchain_ollama").ChatOllama
    llm = chat_ollama(model="smollm2", base_url=server.base_url, temperature=0, num_predict=12)
    answer = llm.invoke("Name three colours.")
    assert answer.content and answer.usage_metadata["output_tokens"] == 12
    pieces = [chunk.content for chunk in llm.stream("Name three colours.")]
    assert len(pieces) > 3 and "".join(pieces) == answer.content
