"""The greedy fast path (engine/sampling.GreedySampler) picks exactly what llama.cpp's own
logit-bias → penalties → greedy chain picks, on SmolLM2's real logits: with and without
biases, on ties, and whatever the bias does to the winner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler

from llamaserve.engine.sampling import GreedySampler, build_sampler
from llamaserve.engine.types import SamplingParams


@pytest.fixture(scope="module")
def decoded(smollm2_path: Path):
    """A model whose context holds the logits of 8 prompt positions."""
    llama = Llama(str(smollm2_path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    tokens = llama.tokenize(b"The lighthouse keeper climbed the stairs at dusk", add_bos=True)[:8]
    llama.eval(tokens)
    yield llama, len(tokens)
    llama.close()


def chain(llama: Llama, bias: dict[int, float]) -> LlamaSampler:
    """llama.cpp's chain for these parameters, built the long way."""
    sampler = LlamaSampler()
    if bias:
        sampler.add_logit_bias(llama.n_vocab(), bias)
    sampler.add_greedy()
    return sampler


def row(llama: Llama, index: int) -> np.ndarray:
    pointer = llama._ctx.get_logits_ith(index)
    return np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),))


def test_plain_greedy_chooses_the_fast_path() -> None:
    class Vocab:
        def n_vocab(self) -> int:
            return 10

    greedy = SamplingParams(temperature=0, logit_bias={3: 5.0})
    assert isinstance(build_sampler(Vocab(), greedy, None, []), GreedySampler)  # type: ignore[arg-type]


@pytest.mark.parametrize(("params", "grammar"), [
    (SamplingParams(temperature=0, repeat_penalty=1.1), None),
    (SamplingParams(temperature=0, frequency_penalty=0.5), None),
    (SamplingParams(temperature=0, presence_penalty=0.5), None),
    (SamplingParams(temperature=0.7), None),
    (SamplingParams(temperature=0), 'root ::= "a"'),
])
def test_anything_else_keeps_the_chain(
    decoded, params: SamplingParams, grammar: str | None
) -> None:
    llama, _ = decoded
    sampler = build_sampler(llama, params, grammar, [1, 2, 3])
    try:
        assert isinstance(sampler, LlamaSampler)
    finally:
        sampler.close()


def test_same_choice_as_llama_cpp(decoded) -> None:
    llama, positions = decoded
    rng = np.random.default_rng(5)
    n_vocab = llama.n_vocab()
    cases = [{}]
    for index in range(positions):
        top = np.argsort(-row(llama, index))[:4].tolist()
        cases += [
            {top[0]: -100.0},  # the winner banned: the runner-up wins
            {top[0]: -100.0, top[1]: -100.0, top[2]: -0.5},
            {top[3]: 100.0},  # a pushed token wins
            {int(t): float(b) for t, b in zip(rng.integers(0, n_vocab, 20),
                                              rng.uniform(-5, 5, 20), strict=True)},
            {n_vocab + 7: 50.0, -1: 50.0},  # outside the vocabulary: ignored by both
        ]
    for bias in cases:
        fast = GreedySampler(n_vocab, bias)
        reference = chain(llama, bias)
        try:
            for index in range(positions):
                before = row(llama, index).copy()
                assert fast.sample(llama._ctx, index) == reference.sample(llama._ctx, index), \
                    (bias, index)
                assert np.array_equal(row(llama, index), before)  # the row is left as it was
        finally:
            reference.close()


def test_ties_go_to_the_first_token_as_in_llama_cpp(decoded) -> None:
    llama, _ = decoded
    logits = row(llama, 0)
    saved = logits.copy()
    try:
        high = float(logits.max()) + 1.0
        logits[[900, 300, 4000]] = high  # three tokens tie for the top
        reference = chain(llama, {})
        try:
            assert GreedySampler(llama.n_vocab(), {}).sample(llama._ctx, 0) == 300
            assert reference.sample(llama._ctx, 0) == 300
        finally:
            reference.close()
        # a bias that makes a tie: float32 sums, as llama.cpp adds them
        logits[:] = saved
        target = int(np.argmax(saved))
        other = 17 if target != 17 else 18
        gap = np.float32(saved[target]) - np.float32(saved[other])
        bias = {other: float(gap)}
        reference = chain(llama, bias)
        try:
            assert GreedySampler(llama.n_vocab(), bias).sample(llama._ctx, 0) == \
                reference.sample(llama._ctx, 0)
        finally:
            reference.close()
    finally:
        logits[:] = saved
