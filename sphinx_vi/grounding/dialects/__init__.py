"""Other grounding models' box grammars, each read into the same `Detection`s in pixels of the original image.

    from sphinx_vi.grounding.dialects import parse_as
    parse_as("florence2", "a cat<loc_52><loc_100><loc_400><loc_600>", (640, 480)).detections

| dialect | written as | coordinates |
|---|---|---|
| `sphinx` | `<p>a cat</p> [0.10,0.20,0.50,0.60]` | fractions of the padded square (ours, SPHINX, converted LLaVA) |
| `kosmos2` | `<phrase>a cat</phrase><object><patch_index_0044><patch_index_0863></object>` | corner patches of a 32×32 grid |
| `qwen_vl` | `<ref>a cat</ref><box>(100,200),(500,600)</box>` | 0–1000 over the image |
| `internvl` | `<ref>a cat</ref><box>[[100, 200, 500, 600]]</box>` | 0–1000 over the image |
| `qwen2_5_vl` | `{"bbox_2d": [64, 128, 320, 384], "label": "a cat"}` | pixels of the resized model input |
| `florence2` | `a cat<loc_100><loc_200><loc_500><loc_600>` | bins of 1000 over the image, read at their centres |
| `shikra` | `a cat [0.100,0.200,0.500,0.600]` | fractions of the image |
| `ferret` | `a cat [100, 200, 500, 600]` | 0–999 grid over the image |
| `cogvlm` | `a cat [[100,200,500,600]]` | 000–999 grid over the image |
"""

from __future__ import annotations

from collections.abc import Sequence

from ..types import ParseResult
from .base import Dialect
from .florence2 import FLORENCE2
from .kosmos2 import KOSMOS2
from .numeric import COGVLM, FERRET, SHIKRA
from .qwen25vl import QWEN2_5_VL
from .sphinx import SPHINX
from .tagged import INTERNVL, QWEN_VL

DIALECTS: dict[str, Dialect] = {d.name: d for d in (SPHINX, KOSMOS2, QWEN_VL, INTERNVL, QWEN2_5_VL, FLORENCE2, SHIKRA, FERRET, COGVLM)}


class UnknownDialectError(KeyError):
    """No grammar of that name."""


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise UnknownDialectError(f"no grounding dialect {name!r}; known: {', '.join(DIALECTS)}") from None


def parse_as(dialect: str, text: str, image_size: Sequence[int]) -> ParseResult:
    """Read `text` in the named model's grammar into detections in pixels of an image of `image_size` (w, h)."""
    return get_dialect(dialect).parse(text, image_size)


__all__ = ["DIALECTS", "Dialect", "UnknownDialectError", "get_dialect", "parse_as"]
