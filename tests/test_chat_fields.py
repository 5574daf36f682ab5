"""Every sampling and output field of /v1/chat/completions changes the output as the OpenAI
reference says, on the real SmolLM2."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from .conftest import LiveServer, assert_openai_error

ASK = [{"role": "user", "content": "Tell me a short story about a fox."}]
STORY = dict(model="smollm2", messages=ASK, max_tokens=24)


def text(completion) -> str:
    return completion.choices[0].message.content


def greedy(client: openai.OpenAI, **extra) -> str:
    return text(client.chat.completions.create(**{**STORY, "temperature": 0, **extra}))


def test_temperature_zero_is_greedy(client: openai.OpenAI) -> None:
    # top_k=1 at a high temperature keeps only the most likely token: the greedy choice
    one_choice = text(client.chat.completions.create(**STORY, temperature=1.5, seed=7,
                                                     extra_body={"top_k": 1}))
    assert greedy(client) == one_choice


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return text(client.chat.completions.create(**STORY, temperature=1, seed=seed))

    assert sample(11) == sample(11)
    assert len({sample(11), sample(12), sample(13)}) > 1


def test_top_p_tiny_keeps_only_the_top_token(client: openai.OpenAI) -> None:
    answers = {text(client.chat.completions.create(**STORY, temperature=1.5, top_p=1e-6,
                                                   seed=s)) for s in (1, 2, 3)}
    assert answers == {greedy(client)}


def test_min_p_one_keeps_only_the_top_token(client: openai.OpenAI) -> None:
    sampled = text(client.chat.completions.create(**STORY, temperature=1.5, seed=5,
                                                  extra_body={"min_p": 1.0}))
    assert sampled == greedy(client)


POEM = [{"role": "user", "content": "Write a poem where every line is 'the cat sat on the mat'."}]


@pytest.mark.parametrize("penalty", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                                     {"extra_body": {"repeat_penalty": 1.8}}])
def test_penalties_change_a_repetitive_reply(client: openai.OpenAI, penalty: dict) -> None:
    # how much each penalty reduces repetition is shown on completions (test_completion_fields)
    def poem(**extra) -> str:
        return text(client.chat.completions.create(model="smollm2", messages=POEM, max_tokens=40,
                                                   temperature=0, **extra))

    assert poem(**penalty) != poem(extra_body={"repeat_penalty": 1.0})


def test_logit_bias_minus_100_bans_the_greedy_first_token(client: openai.OpenAI,
                                                          tokenizer) -> None:
    one_token = {**STORY, "max_tokens": 1}
    first = client.chat.completions.create(**one_token, temperature=0, logprobs=True)
    token_text = first.choices[0].logprobs.content[0].token
    token_id = tokenizer.tokenize(token_text.encode(), add_bos=False, special=True)
    assert len(token_id) == 1
    banned = client.chat.completions.create(**one_token, temperature=0, logprobs=True,
                                            logit_bias={str(token_id[0]): -100})
    assert banned.choices[0].logprobs.content[0].token != token_text


def test_logit_bias_plus_100_forces_a_token(client: openai.OpenAI, tokenizer) -> None:
    (banana,) = tokenizer.tokenize(b" banana", add_bos=False, special=False)
    reply = text(client.chat.completions.create(**{**STORY, "max_tokens": 3}, temperature=0,
                                                logit_bias={str(banana): 100}))
    assert reply == " banana" * 3


def test_logit_bias_outside_vocabulary_is_400(http: httpx.Client) -> None:
    body = {**STORY, "logit_bias": {"99999999": 5}}
    assert assert_openai_error(http.post("/v1/chat/completions", json=body), 400)["param"] == \
        "logit_bias"


def test_max_completion_tokens_ends_with_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="smollm2", messages=ASK,
                                                max_completion_tokens=3, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_stop_split_across_tokens_is_not_streamed(client: openai.OpenAI) -> None:
    full = greedy(client)
    words = full.split()
    stop = f"{words[3]} {words[4]}"  # spans several tokens
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat.completions.create(**STORY, temperature=0, stop=[stop],
                                                      stream=True) if chunk.choices)
    assert stop not in streamed
    assert full.startswith(streamed) and len(streamed) < full.index(stop) + 1


def test_n_gives_n_indexed_independent_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(**STORY, n=3, temperature=1, seed=21)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len({c.message.content for c in completion.choices}) > 1
    again = client.chat.completions.create(**STORY, n=3, temperature=1, seed=21)
    assert [c.message.content for c in again.choices] == \
        [c.message.content for c in completion.choices]
    # usage covers all choices
    assert 3 <= completion.usage.completion_tokens <= 3 * STORY["max_tokens"]


def test_n_streams_every_choice(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**STORY, n=2, temperature=1, seed=3,
                                                 stream=True))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_user_is_accepted_and_logged(client: openai.OpenAI, server: LiveServer) -> None:
    client.chat.completions.create(**STORY, user="user-4711")
    assert "user-4711" in server.log()


@pytest.mark.parametrize(
    ("change", "param"),
    [({"n": 0}, "n"), ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
     ({"logit_bias": {"5": 101}}, "logit_bias.5"), ({"frequency_penalty": -2.5},
                                                    "frequency_penalty"),
     ({"top_logprobs": 2}, "top_logprobs"), ({"mirostat_mode": 3}, "mirostat_mode"),
     ({"response_format": {"type": "xml"}}, "response_format.type")],
)
def test_out_of_range_is_400_naming_the_field(http: httpx.Client, change: dict,
                                              param: str) -> None:
    response = http.post("/v1/chat/completions", json={**STORY, **change})
    assert assert_openai_error(response, 400)["param"] == param


def test_mirostat_with_tiny_target_surprise_is_greedy(client: openai.OpenAI) -> None:
    sampled = text(client.chat.completions.create(
        **STORY, temperature=1, seed=9, extra_body={"mirostat_mode": 2, "mirostat_tau": 0.01}))
    assert sampled == greedy(client)


def test_grammar_constrains_the_reply(client: openai.OpenAI) -> None:
    reply = text(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Is the sky blue?"}],
        extra_body={"grammar": 'root ::= "yes" | "no"'}, temperature=1, seed=1))
    assert reply in ("yes", "no")


def test_bad_grammar_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={**STORY, "grammar": "root ::= ("})
    assert assert_openai_error(response, 400)["param"] == "grammar"


def test_logprobs_describe_each_generated_token(client: openai.OpenAI) -> None:
    # logprobs are the model's distribution, before penalties: turn the catalog's off
    completion = client.chat.completions.create(**STORY, temperature=0, logprobs=True,
                                                top_logprobs=3,
                                                extra_body={"repeat_penalty": 1.0})
    entries = completion.choices[0].logprobs.content
    assert len(entries) == completion.usage.completion_tokens
    assert "".join(e.token for e in entries) == text(completion)
    for entry in entries:
        assert entry.logprob <= 0
        assert bytes(entry.bytes).decode(errors="replace") == entry.token
        assert len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs))


def test_logprobs_stream_with_the_tokens(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**STORY, temperature=0, logprobs=True,
                                                 top_logprobs=1, stream=True))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]
    assert "".join(e.token for e in entries) == greedy(client)


def test_json_object_response_parses(client: openai.OpenAI) -> None:
    reply = text(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": 'Output a JSON object with keys '
                                    '"name" and "age" for a cat.'}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=200))
    assert isinstance(json.loads(reply), dict)


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_response_validates(client: openai.OpenAI, seed: int) -> None:
    reply = text(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Describe a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person",
                                                                "schema": PERSON}},
        temperature=1, seed=seed, max_tokens=200))
    jsonschema.validate(json.loads(reply), PERSON)


def test_unsupported_json_schema_is_400_not_a_fallback(http: httpx.Client) -> None:
    body = {**STORY, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"not": {}}}}}}}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert "unsupported JSON schema" in error["message"]


def test_usage_counts_match_the_tokenizer(client: openai.OpenAI, tokenizer) -> None:
    completion = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
        temperature=0, logprobs=True)
    rendered = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    expected = len(tokenizer.tokenize(rendered.encode(), add_bos=False, special=True))
    assert completion.usage.prompt_tokens == expected
    assert completion.usage.completion_tokens == len(completion.choices[0].logprobs.content)


def test_every_role_and_tool_history_is_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2", max_tokens=8, messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
            {"role": "user", "content": [{"type": "text", "text": "So?"}]},
        ])
    assert completion.choices[0].message.content is not None
