"""Task samples in one shape, and the accounting of rows that could not become one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class Sample:
    """One training/eval example.

    kind "chat": `messages` (role/content, `<image>` placeholders in content) with `images` in
    placeholder order; loss on assistant turns. kind "text": `text`, loss on every token.
    """

    id: str
    messages: list[dict[str, str]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    task: str = "chat"
    lang: str | None = None
    kind: Literal["chat", "text"] = "chat"
    text: str | None = None


class TooManyBadRowsError(ValueError):
    """More rows were bad than the configured fraction allows."""


@dataclass
class LoadReport:
    """How many rows of a source loaded, how many were skipped, and why."""

    source: str
    total: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(where)

    @property
    def bad(self) -> int:
        return sum(self.skipped.values())

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.total if self.total else 0.0

    def check(self, max_bad_fraction: float) -> None:
        """Raise when more than `max_bad_fraction` of the rows were bad (or nothing loaded)."""
        if self.total and self.bad_fraction > max_bad_fraction:
            raise TooManyBadRowsError(
                f"{self.source}: {self.bad} of {self.total} rows are bad ({self.bad_fraction:.1%} > "
                f"{max_bad_fraction:.1%} allowed): {self.reasons()}"
            )

    def reasons(self) -> str:
        return "; ".join(f"{n} × {r} (e.g. {', '.join(self.examples[r])})" for r, n in self.skipped.most_common())

    def summary(self) -> str:
        head = f"{self.source}: {self.loaded} of {self.total} rows loaded, {self.bad} skipped"
        return head + ("\n  " + "\n  ".join(f"{n:>6} × {r}  e.g. {', '.join(self.examples[r])}" for r, n in self.skipped.most_common()) if self.bad else "")


@dataclass
class LoadResult:
    samples: list[Sample]
    report: LoadReport
