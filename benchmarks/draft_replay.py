"""Replay prompt-lookup drafting on real greedy outputs, to compare drafting rules offline.

    python benchmarks/draft_replay.py                    # generate (~1 min), then replay
    python benchmarks/draft_replay.py --cost 0.45 0.55 0.7 --draft-max 8 12 16

It generates SmolLM2's temperature-0 answers once (16 chat questions, 3 copies and 3 edits of
speed.py's passages; cached in --cache), then replays llamaserve's drafting
(engine/speculative.py: NgramIndex, DraftPolicy) over each answer: at every step the
sequence proposes a draft, the draft's tokens are accepted while they equal the answer's, and
the step costs 1 + cost x (drafted tokens) plain decoding steps. On a CPU a verification batch
costs nearly in proportion to its tokens (SmolLM2 Q4_1, 2 threads: 1, 2, 3, 5, 9, 13 tokens
in one llama_decode took 1, 1.8, 2.2, 3.4, 5.2, 7.0 times one token), so --cost 0.45-0.7
brackets it. Printed: the speedup over plain decoding (mean and worst answer) for each kind
and rule, and the draft tokens accepted / proposed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from load import resolve_model
from speed import grounded_prompt

from llamaserve.engine import speculative
from llamaserve.engine.speculative import DraftPolicy, NgramIndex

QUESTIONS = [
    "Write a long story about a lighthouse keeper and the sea.",
    "What is the capital of France and why is it famous?",
    "Explain how photosynthesis works.", "Give me three tips for learning to play the guitar.",
    "Write a Python function that reverses a string.",
    "What are the benefits of regular exercise?", "Describe the water cycle in simple terms.",
    "Write a short poem about autumn leaves.", "How do I make a cup of tea?",
    "Summarize the plot of Romeo and Juliet.", "What is machine learning?",
    "List five animals that live in the ocean and describe each.",
    "Write an email asking my manager for a day off.", "Why is the sky blue?",
    "Explain the difference between a list and a tuple in Python.",
    "Tell me a joke about computers.",
]


def generate(gguf: Path) -> list[dict]:
    """Each prompt's tokens and its greedy answer's tokens, with the engine's own context."""
    import numpy as np

    from llamaserve.engine.context import ModelContext, load_llama
    from llamaserve.engine.options import LoadOptions
    from llamaserve.engine.prompt import ChatPrompter

    llama = load_llama(gguf, LoadOptions(n_ctx=2048, n_threads=2, parallel=1))
    context = ModelContext(llama)
    prompter = ChatPrompter(llama)  # the model's own chat template, as the server renders it
    items = [("chat", q) for q in QUESTIONS]
    items += [(kind, grounded_prompt(kind, i)) for i in range(3) for kind in ("copy", "edit")]
    found = []
    for kind, text in items:
        rendered = prompter.render([{"role": "user", "content": text}])
        prompt = llama.tokenize(rendered.text.encode(), add_bos=rendered.add_bos, special=True)
        context.drop_cells(0)
        for i, token in enumerate(prompt):
            context.put(i, token, i, 0, i == len(prompt) - 1)
        assert context.decode(len(prompt)) == 0
        answer: list[int] = []
        for _ in range(256 if kind == "chat" else 200):
            token = int(np.argmax(context.logits(-1 if not answer else 0)))
            if context.is_end(token):
                break
            answer.append(token)
            context.put(0, token, len(prompt) + len(answer) - 1, 0, True)
            assert context.decode(1) == 0
        found.append({"kind": kind, "prompt": prompt, "answer": answer})
        print(f"{kind}: {len(prompt)} prompt, {len(answer)} answer tokens", file=sys.stderr)
    context.close()
    return found


def replay(item: dict, cost: float, draft_max: int, trusted: int) -> tuple[float, int, int]:
    """(speedup over plain decoding, draft tokens proposed, accepted) for one answer."""
    prompt, answer = item["prompt"], item["answer"]
    policy, index = DraftPolicy(draft_max, trusted=trusted), NgramIndex()
    steps, drafted, accepted, i = 0.0, 0, 0, 0
    while i < len(answer):
        index.sync(prompt + answer[:i], answer[i])  # answer[i]: the pending token
        cap = min(policy.allowed(), len(answer) - i)
        draft = index.propose(cap, policy.min_match()) if cap > 0 else []
        kept = 0
        while kept < len(draft) and i + 1 + kept < len(answer) and \
                answer[i + 1 + kept] == draft[kept]:
            kept += 1
        steps += 1 + cost * len(draft)
        if draft:
            policy.record(len(draft), kept)
            drafted, accepted = drafted + len(draft), accepted + kept
        i += 1 + kept
    return len(answer) / steps, drafted, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/draft_replay.json"))
    parser.add_argument("--cost", type=float, nargs="+", default=[0.45, 0.55, 0.7],
                        help="cost of a drafted token, in plain decoding steps")
    parser.add_argument("--draft-max", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--trusted", type=int, nargs="+",
                        default=[speculative.NGRAM_MIN, speculative.NGRAM_TRUSTED],
                        help="shortest match drafted from before drafts have paid")
    args = parser.parse_args()
    if not args.cache.exists():
        args.cache.write_text(json.dumps(generate(resolve_model(args.model))))
    items = json.loads(args.cache.read_text())
    kinds = sorted({item["kind"] for item in items})
    print("| cost | draft max | trusted match | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for cost in args.cost:
        for draft_max in args.draft_max:
            for trusted in args.trusted:
                cells = []
                for kind in kinds:
                    runs = [replay(it, cost, draft_max, trusted)
                            for it in items if it["kind"] == kind]
                    speedups = [r[0] for r in runs]
                    cells.append(f"{statistics.mean(speedups):.3f}x "
                                 f"(worst {min(speedups):.3f}x; "
                                 f"{sum(r[2] for r in runs)}/{sum(r[1] for r in runs)})")
                print(f"| {cost} | {draft_max} | {trusted} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
