"""What every grounding dialect shares: the `Dialect` interface and reading numbers into pixel boxes."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..geometry import Box, clip_box
from ..types import Detection, ParseResult

MAX_LABEL_CHARS = 200  # how far back from a box its label may start
MAX_TEXT_CHARS = 200_000  # longer answers are read up to here (a warning says so): bounds the work
_LABEL_BREAK = re.compile(r"[,.;:!?\n\]\)>]")


class Dialect(ABC):
    """One model family's way of writing boxes as text, read into `Detection`s in pixels of the original image.

    `parse` never raises on model output and runs in linear time; `format` writes detections the way the
    model would (for prompts, round-trip tests and training data in that grammar).
    """

    name: str

    @abstractmethod
    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult: ...

    @abstractmethod
    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str: ...


def bounded(text: str, result: ParseResult) -> str:
    """`text` cut to MAX_TEXT_CHARS (saying so in `result.warnings`)."""
    if len(text) > MAX_TEXT_CHARS:
        result.warnings.append(f"answer of {len(text)} characters read up to {MAX_TEXT_CHARS}")
        return text[:MAX_TEXT_CHARS]
    return text


def label_before(text: str, start: int) -> str:
    """The words just before position `start`, back to the previous punctuation or box (at most MAX_LABEL_CHARS)."""
    window = text[max(0, start - MAX_LABEL_CHARS) : start]
    breaks = [m.end() for m in _LABEL_BREAK.finditer(window)]
    return window[breaks[-1] if breaks else 0 :].strip()


def scaled_box(values: Sequence[float], scale: tuple[float, float], image_size: Sequence[int], what: str,
               result: ParseResult) -> Box | None:
    """(x1, y1, x2, y2) in a model's units × (sx, sy) → a pixel box clipped to the image; None (with a warning) if empty."""
    if len(values) != 4:
        result.warnings.append(f"{what}: {len(values)} numbers, not 4")
        return None
    x1, y1, x2, y2 = (float(v) for v in values)
    sx, sy = scale
    box = clip_box((min(x1, x2) * sx, min(y1, y2) * sy, max(x1, x2) * sx, max(y1, y2) * sy), image_size[0], image_size[1])
    if box is None:
        result.warnings.append(f"{what}: no area inside the image")
    return box
