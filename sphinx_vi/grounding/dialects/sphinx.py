"""SPHINX and sphinx_vi (and the checkpoints converted from SPHINX / LLaVA): fractions of the padded square."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..grammar import format_phrase, parse
from ..types import Detection, ParseResult
from .base import Dialect


@dataclass(frozen=True)
class SphinxDialect(Dialect):
    name: str = "sphinx"

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        return parse(text, image_size)

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        grouped: dict[str, list] = {}
        for d in detections:
            if d.box is not None:
                grouped.setdefault(d.label, []).append(d.box)
        return " ".join(format_phrase(label, boxes, image_size) for label, boxes in grouped.items())


SPHINX = SphinxDialect()
