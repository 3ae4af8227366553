"""Florence-2: a phrase followed by `<loc_k>` quadruples, k a bin of 1000 over the original image's width / height.

    a cat<loc_52><loc_100><loc_400><loc_600>        (<CAPTION_TO_PHRASE_GROUNDING>, <OD>: one phrase per run of boxes)

A bin is read at its centre, `(k + 0.5) · size / 1000`, and written as `floor(x / (size / 1000))`, as
transformers' `Florence2PostProcessor` quantizes and dequantizes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Detection, ParseResult
from .base import MAX_LABEL_CHARS, Dialect, bounded, scaled_box

BINS = 1000
_RUN = re.compile(r"(?:<loc_(\d{1,4})>)+")
_LOC = re.compile(r"<loc_(\d{1,4})>")
_NOT_LABEL = re.compile(r"</?s>|<pad>|<[^<>]{0,40}>")


@dataclass(frozen=True)
class Florence2Dialect(Dialect):
    name: str = "florence2"

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        result = ParseResult()
        text = bounded(str(text), result)
        w, h = image_size[0], image_size[1]
        previous = 0
        for run in _RUN.finditer(text):
            label = _NOT_LABEL.sub("", text[max(previous, run.start() - MAX_LABEL_CHARS) : run.start()]).strip()
            previous = run.end()
            bins = [int(k) for k in _LOC.findall(run.group(0))]
            if len(bins) % 4:
                result.warnings.append(f"florence2: {len(bins)} locations after {label!r}, not whole boxes")
            for i in range(0, len(bins) - len(bins) % 4, 4):
                centres = [b + 0.5 for b in bins[i : i + 4]]
                box = scaled_box(centres, (w / BINS, h / BINS), image_size, f"florence2 box of {label!r}", result)
                if box is not None:
                    result.detections.append(Detection(label, box))
        return result

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        w, h = image_size[0], image_size[1]

        def loc(value: float, size: float) -> str:
            return f"<loc_{min(max(math.floor(value / (size / BINS)), 0), BINS - 1)}>"

        return "".join(f"{d.label}{loc(d.box[0], w)}{loc(d.box[1], h)}{loc(d.box[2], w)}{loc(d.box[3], h)}"
                       for d in detections if d.box is not None)


FLORENCE2 = Florence2Dialect()
