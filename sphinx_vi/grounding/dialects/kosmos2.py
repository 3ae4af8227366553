"""Kosmos-2: `<phrase>a cat</phrase><object><patch_index_0044><patch_index_0863></object>` on a 32×32 grid.

Read and written with transformers' own Kosmos-2 functions (`clean_text_and_extract_entities_with_bboxes`,
`coordinate_to_patch_index`): corner patches of the original image, several boxes split by
`</delimiter_of_multi_objects/>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers.models.kosmos2.processing_kosmos2 import clean_text_and_extract_entities_with_bboxes, coordinate_to_patch_index

from ..types import Detection, ParseResult
from .base import Dialect, bounded, scaled_box

PATCHES_PER_SIDE = 32
MULTI = "</delimiter_of_multi_objects/>"


@dataclass(frozen=True)
class Kosmos2Dialect(Dialect):
    name: str = "kosmos2"
    patches: int = PATCHES_PER_SIDE

    def parse(self, text: str, image_size: Sequence[int]) -> ParseResult:
        result = ParseResult()
        text = bounded(str(text), result)
        try:
            _, entities = clean_text_and_extract_entities_with_bboxes(text, num_patches_per_side=self.patches)
        except (ValueError, IndexError) as err:  # malformed patch tokens
            result.warnings.append(f"kosmos2: could not read the answer ({err})")
            return result
        for phrase, _, boxes in entities:
            for box in boxes:
                pixel = scaled_box(box, (image_size[0], image_size[1]), image_size, f"kosmos2 box of {phrase.strip()!r}", result)
                if pixel is not None:
                    result.detections.append(Detection(phrase.strip(), pixel))
        return result

    def format(self, detections: Sequence[Detection], image_size: Sequence[int]) -> str:
        w, h = image_size[0], image_size[1]
        grouped: dict[str, list[str]] = {}
        for d in detections:
            if d.box is None:
                continue
            x1, y1, x2, y2 = d.box
            ul, lr = coordinate_to_patch_index((x1 / w, y1 / h, x2 / w, y2 / h), self.patches)
            grouped.setdefault(d.label, []).append(f"<patch_index_{ul:04d}><patch_index_{lr:04d}>")
        return " ".join(f"<phrase>{label}</phrase><object>{MULTI.join(cells)}</object>" for label, cells in grouped.items())


KOSMOS2 = Kosmos2Dialect()
