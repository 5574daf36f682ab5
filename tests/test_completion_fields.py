"""Fields of /v1/completions (and the sampling fields shared with chat) on the real SmolLM2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import assert_openai_error, start_server

PROMPT = "Hello, my name is"
NO_PENALTY = {"extra_body": {"repeat_penalty": 1.0}}


def complete(client: openai.OpenAI, prompt: str | list = PROMPT, **extra):
    return client.completions.create(**{"model": "smollm2", "prompt": prompt, "max_tokens": 12,
                                        "temperature": 0, **extra})


def test_frequency_penalty_stops_a_repeated_token(client: openai.OpenAI) -> None:
    prompt = "1, 1, 1, 1, 1, 1, 1, 1,"
    plain = complete(client, prompt, **NO_PENALTY).choices[0].text
    penalised = complete(client, prompt, frequency_penalty=1.5, **NO_PENALTY).choices[0].text
    assert plain.count("1") >= 4
    assert penalised.count("1") < plain.count("1")


def test_presence_penalty_avoids_tokens_already_present(client: openai.OpenAI) -> None:
    prompt = "I love you. I love you. I love you. I love you."
    plain = complete(client, prompt, **NO_PENALTY).choices[0].text
    penalised = complete(client, prompt, presence_penalty=1.5, **NO_PENALTY).choices[0].text
    assert plain.startswith(" I love you")
    assert "love" not in penalised


def test_repeat_penalty_stops_a_repeated_token(client: openai.OpenAI) -> None:
    prompt = "1, 1, 1, 1, 1, 1, 1, 1,"
    plain = complete(client, prompt, **NO_PENALTY).choices[0].text
    penalised = complete(client, prompt, extra_body={"repeat_penalty": 1.5}).choices[0].text
    assert penalised.count("1") < plain.count("1")


def test_seed_and_stop_work_on_completions(client: openai.OpenAI) -> None:
    def sample() -> str:
        return complete(client, temperature=1, seed=99).choices[0].text

    assert sample() == sample()
    free = complete(client).choices[0].text
    word = free.split()[1]
    stopped = complete(client, stop=word).choices[0]
    assert word not in stopped.text and stopped.finish_reason == "stop"


def test_echo_prepends_the_prompt(client: openai.OpenAI) -> None:
    plain = complete(client).choices[0].text
    echoed = complete(client, echo=True)
    assert echoed.choices[0].text == PROMPT + plain
    assert echoed.usage.completion_tokens == complete(client).usage.completion_tokens


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI, tokenizer) -> None:
    result = complete(client, echo=True, logprobs=2, max_tokens=0)
    choice = result.choices[0]
    assert choice.text == PROMPT
    logprobs = choice.logprobs
    n_prompt = len(tokenizer.tokenize(PROMPT.encode(), add_bos=False))
    assert len(logprobs.tokens) == n_prompt == result.usage.prompt_tokens
    assert logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens) == PROMPT


def test_logprobs_give_tokens_offsets_and_top_alternatives(client: openai.OpenAI) -> None:
    choice = complete(client, logprobs=3, **NO_PENALTY).choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.text_offset)
    offsets = [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs,
                                   logprobs.top_logprobs, strict=True):
        assert len(top) == 3
        assert token in top and top[token] == pytest.approx(logprob)
        assert logprob == pytest.approx(max(top.values()))  # greedy picks the top token


def test_logprobs_zero_gives_only_the_chosen_token(client: openai.OpenAI) -> None:
    logprobs = complete(client, logprobs=0).choices[0].logprobs
    assert all(top == {} or top is None for top in logprobs.top_logprobs)
    assert all(lp <= 0 for lp in logprobs.token_logprobs)


def test_logprobs_stream(client: openai.OpenAI) -> None:
    chunks = list(complete(client, logprobs=1, stream=True))
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs
              for t in c.choices[0].logprobs.tokens]
    assert "".join(tokens) == complete(client).choices[0].text


def test_n_gives_n_choices_per_prompt(client: openai.OpenAI) -> None:
    result = complete(client, ["Red, green,", "Monday, Tuesday,"], n=2, temperature=1, seed=4)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert all(c.text for c in result.choices)


def test_best_of_returns_the_candidate_with_the_best_mean_logprob(client: openai.OpenAI) -> None:
    candidates = complete(client, n=3, temperature=1.2, seed=17, logprobs=0).choices
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs)
             for c in candidates]
    best = candidates[means.index(max(means))].text
    chosen = complete(client, n=1, best_of=3, temperature=1.2, seed=17)
    assert len(chosen.choices) == 1
    assert chosen.choices[0].text == best
    assert chosen.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in candidates)


def test_best_of_below_n_or_streamed_is_400(http: httpx.Client) -> None:
    base = {"model": "smollm2", "prompt": PROMPT, "max_tokens": 4}
    assert assert_openai_error(http.post("/v1/completions",
                                         json={**base, "n": 3, "best_of": 2}), 400)["param"] == \
        "best_of"
    assert assert_openai_error(http.post("/v1/completions",
                                         json={**base, "best_of": 2, "stream": True}), 400)


def test_suffix_without_fill_in_the_middle_tokens_is_400(http: httpx.Client) -> None:
    body = {"model": "smollm2", "prompt": "def add(a, b):", "suffix": "    return c",
            "max_tokens": 8}
    error = assert_openai_error(http.post("/v1/completions", json=body), 400)
    assert error["param"] == "suffix"
    assert "fill-in-the-middle" in error["message"]


def test_logit_bias_on_completions(client: openai.OpenAI, tokenizer) -> None:
    (banana,) = tokenizer.tokenize(b" banana", add_bos=False, special=False)
    text = complete(client, max_tokens=2, logit_bias={str(banana): 100}).choices[0].text
    assert text == " banana banana"


def test_token_id_prompt_outside_vocabulary_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": "smollm2", "prompt": [1, 9999999]})
    assert assert_openai_error(response, 400)["param"] == "prompt"


def test_grammar_on_completions(client: openai.OpenAI) -> None:
    text = complete(client, "The answer is", extra_body={"grammar": 'root ::= [0-9]+'},
                    max_tokens=5).choices[0].text
    assert text.isdigit()


@pytest.fixture(scope="module")
def fim_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2 with three of its special tokens declared as fill-in-the-middle tokens, so the
    suffix path runs on a real model (the tokens are real; the model was not trained on FIM)."""
    tmp = tmp_path_factory.mktemp("fim")
    weights = tmp / "smollm2-fim.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(smollm2_path), str(weights),
         "--special-token-by-id", "fim_pre", str(FIM_PRE), "--special-token-by-id", "fim_suf",
         str(FIM_SUF), "--special-token-by-id", "fim_mid", str(FIM_MID), "--force"],
        check=True, capture_output=True,
    )
    live = start_server([str(weights), "--ctx", "512"], tmp)
    yield live
    live.stop()


FIM_PRE, FIM_SUF, FIM_MID = 4, 5, 6  # <reponame>, <file_sep>, <filename> in SmolLM2's vocab


def test_suffix_builds_a_fill_in_the_middle_prompt(fim_server, tokenizer) -> None:
    client = openai.OpenAI(base_url=fim_server.v1, api_key="IGNORED")
    prefix, suffix = "def add(a, b):\n", "\n    return c\n"
    result = client.completions.create(model="smollm2-fim", prompt=prefix, suffix=suffix,
                                       max_tokens=8, temperature=0)
    n_prefix = len(tokenizer.tokenize(prefix.encode(), add_bos=False))
    n_suffix = len(tokenizer.tokenize(suffix.encode(), add_bos=False))
    # <fim_pre> prefix <fim_suf> suffix <fim_mid>, then the middle is generated
    assert result.usage.prompt_tokens == n_prefix + n_suffix + 3
    assert result.choices[0].finish_reason in ("stop", "length")
    without = client.completions.create(model="smollm2-fim", prompt=prefix, max_tokens=8,
                                        temperature=0)
    assert without.usage.prompt_tokens == n_prefix
