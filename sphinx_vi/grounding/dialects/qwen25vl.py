"""Qwen2.5-VL: JSON objects with `bbox_2d` in pixels of the resized image the model saw, and a `label`.

    ```json
    [{"bbox_2d": [135, 114, 1016, 672], "label": "con mèo"}]
    ```

The model's input size comes from transformers' own `smart_resize` (sides multiples of patch × merge,
the pixel count within the processor's bounds), so boxes are scaled back to the original image. Each
`{…}` object is read on its own, so one broken object does not lose the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from ..grammar import NUMBER
from ..types import Detection, ParseResult
from .base import Dialect, bounded, scaled_box

_OBJECT = re.compile(r"\{[^{}]{0,1000}\}")
_BBOX = re.compile(r'"bbox_2d"\s*:\s*\[([^\[\]]{0,200})\]')
_LABEL = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.){0,200})"')


@dataclass(frozen=True)
class Qwen25VLDialect(Dialect):
    """`factor` = patch size × spatial merge; the pixel bounds are the image processor's (`min_pixels`, `max_pixels`)."""

    name: str = "qwen2_5_vl"
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384

    def input_size(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(width, height) of the image as the model saw it."""
        height, width = smart_resize(int(image_size[1]), int(image_size[0]), factor=self.factor,
                                     min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return width, height

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        result = ParseResult()
        text = bounded(str(text), result)
        try:
            seen_w, seen_h = self.input_size(image_size)
        except ValueError as err:  # smart_resize refuses extreme aspect ratios
            result.warnings.append(f"qwen2_5_vl: {err}")
            return result
        scale = (image_size[0] / seen_w, image_size[1] / seen_h)
        for match in _OBJECT.finditer(text):
            obj = match.group(0)
            bbox = _BBOX.search(obj)
            if bbox is None:
                continue
            label_match = _LABEL.search(obj)
            label = ""
            if label_match is not None:
                try:
                    label = json.loads(f'"{label_match.group(1)}"')
                except json.JSONDecodeError:
                    label = label_match.group(1)
            values = [float(v) for v in NUMBER.findall(bbox.group(1))]
            box = scaled_box(values, scale, image_size, f"qwen2_5_vl bbox_2d of {label!r}", result)
            if box is not None:
                result.detections.append(Detection(label.strip(), box))
        return result

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        seen_w, seen_h = self.input_size(image_size)
        sx, sy = seen_w / image_size[0], seen_h / image_size[1]
        objects = [{"bbox_2d": [round(d.box[0] * sx), round(d.box[1] * sy), round(d.box[2] * sx), round(d.box[3] * sy)],
                    "label": d.label} for d in detections if d.box is not None]
        return "```json\n" + json.dumps(objects, ensure_ascii=False) + "\n```"


QWEN2_5_VL = Qwen25VLDialect()
