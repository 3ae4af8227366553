"""Boxes in tags after a `<ref>` phrase: Qwen-VL and InternVL, both on a 0–1000 grid over the image.

    <ref>con mèo</ref><box>(120,340),(560,780)</box>          Qwen-VL (one box per <box>, several <box> in a row)
    <ref>con mèo</ref><box>[[120, 340, 560, 780], [...]]</box>  InternVL (a list of boxes in one <box>)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..grammar import NUMBER
from ..types import Detection, ParseResult
from .base import Dialect, bounded, scaled_box

GRID = 1000.0
_TAGGED = re.compile(r"(?:<ref>([^<]{0,200})</ref>)?(\s*)<box>([^<]{0,400})</box>")


def _qwen_vl_box(v: Sequence[int]) -> str:
    return f"<box>({v[0]},{v[1]}),({v[2]},{v[3]})</box>"


def _internvl_boxes(boxes: Sequence[Sequence[int]]) -> str:
    return "<box>[" + ", ".join(f"[{b[0]}, {b[1]}, {b[2]}, {b[3]}]" for b in boxes) + "]</box>"


@dataclass(frozen=True)
class TaggedDialect(Dialect):
    name: str
    write_boxes: Callable[[list[list[int]]], str]  # the boxes of one phrase, as the model writes them

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        result = ParseResult()
        text = bounded(str(text), result)
        scale = (image_size[0] / GRID, image_size[1] / GRID)
        label, last_end = "", -1
        for match in _TAGGED.finditer(text):
            if match.group(1) is not None:
                label = match.group(1).strip()
            elif match.start() != last_end:  # a <box> that does not follow the phrase's previous box has no phrase
                label = ""
            last_end = match.end()
            values = [float(v) for v in NUMBER.findall(match.group(3))]
            if not values or len(values) % 4:
                result.warnings.append(f"{self.name}: {match.group(0)[:80]!r} does not hold whole boxes")
                continue
            for i in range(0, len(values), 4):
                box = scaled_box(values[i : i + 4], scale, image_size, f"{self.name} box", result)
                if box is not None:
                    result.detections.append(Detection(label, box))
        return result

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        w, h = image_size[0], image_size[1]
        grouped: dict[str, list[list[int]]] = {}
        for d in detections:
            if d.box is not None:
                x1, y1, x2, y2 = d.box
                grouped.setdefault(d.label, []).append([round(min(max(v, 0.0), 1.0) * GRID) for v in (x1 / w, y1 / h, x2 / w, y2 / h)])
        return "".join(f"<ref>{label}</ref>{self.write_boxes(boxes)}" for label, boxes in grouped.items())


QWEN_VL = TaggedDialect("qwen_vl", lambda boxes: "".join(_qwen_vl_box(b) for b in boxes))
INTERNVL = TaggedDialect("internvl", _internvl_boxes)
