"""A draft model for speculative decoding: a smaller model with the target's vocabulary, in
its own llama.cpp context with one sequence per target sequence.

Before drafting, each sequence's cells are brought to the target's tokens (the common prefix
is kept, the rest dropped, the missing tokens decoded); then it proposes greedily, one token
per decode for all drafting sequences together. Rejected draft tokens are dropped at the next
synchronisation, as the target drops its cells.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .context import ModelContext, load_llama
from .options import N_BATCH, LoadOptions

logger = logging.getLogger(__name__)

VOCAB_PROBES = 64  # token texts compared between the draft and the target


class DraftModelError(ValueError):
    """The draft model cannot draft for this target (a different vocabulary)."""


class DraftModel:
    """The draft model's context (the scheduler thread's, once loaded)."""

    def __init__(self, context: ModelContext, parallel: int) -> None:
        self.context = context
        self.tokens: list[list[int]] = [[] for _ in range(parallel)]  # its cells, by sequence

    @classmethod
    def load(cls, path: Path, options: LoadOptions, target: ModelContext) -> DraftModel:
        llama = load_llama(path, options)
        context = ModelContext(llama)
        try:
            check_vocabulary(context, target, path)
        except BaseException:
            context.close()
            raise
        logger.info("draft model %s (%d tokens of vocabulary)", path, context.n_vocab)
        return cls(context, options.parallel)

    def close(self) -> None:
        self.context.close()

    def propose(self, wanted: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        """Greedy drafts: for each sequence, (its tokens so far, draft length) → the draft."""
        drafts: dict[int, list[int]] = {}
        for seq, (history, length) in wanted.items():
            if length > 0:
                drafts[seq] = [self._sync(seq, history)]
        growing = [seq for seq in drafts if len(drafts[seq]) < wanted[seq][1]]
        while growing:
            context = self.context
            for i, seq in enumerate(growing):
                token = drafts[seq][-1]
                context.put(i, token, len(self.tokens[seq]), seq, True)
                self.tokens[seq].append(token)
            result = context.decode(len(growing))
            if result != 0:
                for seq in growing:  # its cells no longer match what it records
                    context.drop_cells(seq)
                    self.tokens[seq].clear()
                raise RuntimeError(f"the draft model's llama_decode returned {result}")
            for i, seq in enumerate(growing):
                drafts[seq].append(int(np.argmax(context.logits(i))))
            growing = [seq for seq in growing if len(drafts[seq]) < wanted[seq][1]]
        return drafts

    def _sync(self, seq: int, history: list[int]) -> int:
        """Make sequence `seq`'s cells hold history[:-1] and decode the last token: the first
        draft token (greedy)."""
        cells = self.tokens[seq]
        common = 0
        limit = min(len(cells), len(history) - 1)
        while common < limit and cells[common] == history[common]:
            common += 1
        if common < len(cells):
            if not self.context.drop_cells(seq, common):
                self.context.drop_cells(seq)
                common = 0
            del cells[common:]
        context = self.context
        for start in range(common, len(history), N_BATCH):
            chunk = history[start : start + N_BATCH]
            for i, token in enumerate(chunk):
                context.put(i, token, start + i, seq, start + i == len(history) - 1)
            result = context.decode(len(chunk))
            if result != 0:
                context.drop_cells(seq)
                cells.clear()
                raise RuntimeError(f"the draft model's llama_decode returned {result}")
            cells.extend(chunk)
        return int(np.argmax(context.logits(-1)))


def check_vocabulary(draft: ModelContext, target: ModelContext, path: Path) -> None:
    """The draft must tokenize as the target does: the same size and token texts."""
    if draft.n_vocab != target.n_vocab:
        raise DraftModelError(
            f"the draft model {path.name} has a vocabulary of {draft.n_vocab} tokens and the "
            f"model {target.n_vocab}: a draft model must share the model's vocabulary (use a "
            "smaller model of the same family)")
    step = max(1, target.n_vocab // VOCAB_PROBES)
    for token in range(0, target.n_vocab, step):
        if draft.token_text(token) != target.token_text(token):
            raise DraftModelError(
                f"the draft model {path.name} has a different vocabulary from the model (token "
                f"{token} is {draft.token_text(token)!r}, not {target.token_text(token)!r}): a "
                "draft model must share the model's vocabulary")
