"""Stop strings in streamed text: emit what cannot be the start of a stop string, hold the rest."""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces in order; get back the text that is safe to emit.

    A stop string may arrive split across tokens, so the tail of the text that could still
    become a stop string is held back until the next piece decides it.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that completed, once stopped

    def feed(self, piece: str) -> str:
        """Text to emit now. Sets `stopped` when a stop string completed (it is not emitted)."""
        if self.stopped:
            return ""
        text = self._held + piece
        if not self.stops:
            return text
        found = [(i, stop) for stop in self.stops if (i := text.find(stop)) >= 0]
        if found:
            cut, self.matched = min(found, key=lambda hit: hit[0])
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0
        for stop in self.stops:
            # longest suffix of text that is a proper prefix of this stop string
            for length in range(min(len(stop) - 1, len(text)), keep, -1):
                if text.endswith(stop[:length]):
                    keep = length
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The held-back text, once generation ended without completing a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
