"""Cutting streamed text at a template's stop strings without sending any part of one."""

from __future__ import annotations

from collections.abc import Sequence


class StopCutter:
    """Feed text pieces; each `feed` returns what can be sent, holding back a possible start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._text = ""  # everything received, cut at the first stop once one appears
        self._sent = 0
        self._stopped = False

    def feed(self, piece: str) -> str:
        if self._stopped:
            return ""
        self._text += piece
        cut = min((i for i in (self._text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._text, self._stopped = self._text[:cut], True
            return self._release(len(self._text))
        return self._release(max(self._sent, len(self._text) - self._hold))

    def finish(self) -> str:
        """The rest of the text, once generation ended."""
        return self._release(len(self._text))

    @property
    def text(self) -> str:
        """The whole answer so far, cut at a stop string."""
        return self._text

    def _release(self, upto: int) -> str:
        out, self._sent = self._text[self._sent:upto], max(self._sent, upto)
        return out
