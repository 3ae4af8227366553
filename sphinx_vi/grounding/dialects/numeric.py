"""Boxes as bracketed numbers after their phrase: Shikra (fractions), Ferret and CogVLM (0–999 integer grids).

    a dog [0.120,0.340,0.560,0.780]             Shikra: fractions of the image, 3 decimals ('(…)' read too)
    a dog [120, 340, 560, 780]                  Ferret: integers on a 0–999 grid over the image
    a dog [[120,340,560,780;600,100,700,200]]   CogVLM: three-digit 000–999, several boxes split by ';'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..grammar import NUMBER
from ..types import Detection, ParseResult
from .base import Dialect, bounded, label_before, scaled_box

_GROUP = re.compile(r"[\[(]{1,2}([-+0-9.,;\s]{1,400})[\])]{1,2}")


@dataclass(frozen=True)
class NumericDialect(Dialect):
    name: str
    units: float  # the number that stands for the full width / height (1 for fractions, 1000 for the grids)
    decimals: int  # how `format` writes a fraction (units 1)
    brackets: tuple[str, str]  # how `format` opens and closes a group
    separator: str = ","  # between numbers, as `format` writes them
    digits: int = 1  # zero-padded width of a grid integer, as `format` writes it

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        result = ParseResult()
        text = bounded(str(text), result)
        scale = (image_size[0] / self.units, image_size[1] / self.units)
        for match in _GROUP.finditer(text):
            label = label_before(text, match.start())
            for part in match.group(1).split(";"):
                values = [float(v) for v in NUMBER.findall(part)]
                if len(values) == 2:
                    result.warnings.append(f"{self.name}: a point {part.strip()!r} is not a box")
                    continue
                box = scaled_box(values, scale, image_size, f"{self.name} box {part.strip()!r}", result)
                if box is not None:
                    result.detections.append(Detection(label, box))
        return result

    def _number(self, value: float) -> str:
        if self.decimals:
            return f"{min(max(value, 0.0), self.units):.{self.decimals}f}"
        return f"{min(max(round(value), 0), int(self.units) - 1):0{self.digits}d}"

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        w, h = image_size[0], image_size[1]
        parts = []
        for d in detections:
            if d.box is None:
                continue
            x1, y1, x2, y2 = d.box
            body = self.separator.join(self._number(v) for v in (x1 / w * self.units, y1 / h * self.units,
                                                                   x2 / w * self.units, y2 / h * self.units))
            parts.append(f"{d.label} {self.brackets[0]}{body}{self.brackets[1]}")
        return ", ".join(parts)


SHIKRA = NumericDialect("shikra", units=1.0, decimals=3, brackets=("[", "]"))
FERRET = NumericDialect("ferret", units=1000.0, decimals=0, brackets=("[", "]"), separator=", ")
COGVLM = NumericDialect("cogvlm", units=1000.0, decimals=0, brackets=("[[", "]]"), digits=3)
