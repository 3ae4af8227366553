"""The whole chain without a UI: image + query → detections → masks → edited image."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from ..api import SphinxVi
from ..grounding import Detection
from ..images import ImageInput
from .inpaint import EditSettings, Inpainter, union_mask
from .masks import Segmenter


@dataclass
class ChainResult:
    image: Image.Image  # the input, as RGB
    answer: str  # the model's raw text
    detections: list[Detection]
    masks: np.ndarray  # (N, H, W) bool, one per detection with a box
    edited: Image.Image | None
    backends: dict[str, str]  # stage → backend that produced it
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_chain(
    vi: SphinxVi,
    image: ImageInput,
    query: str,
    segmenter: Segmenter,
    inpainter: Inpainter | None = None,
    edit: Literal["remove", "replace"] | None = None,
    replace_prompt: str | None = None,
    settings: EditSettings | None = None,
    lang: Literal["vi", "en", "auto"] = "auto",
) -> ChainResult:
    """Detect `query`, segment every box, and (if `edit`) remove or replace the masked objects."""
    settings = settings or EditSettings()
    timings: dict[str, float] = {}
    img = vi.processor.load(image)
    t = time.perf_counter()
    answer = vi.answer(img, "detect", lang, category=query)
    timings["detect"] = time.perf_counter() - t
    boxed = [d for d in answer.detections if d.box is not None]
    t = time.perf_counter()
    masks = segmenter.segment(img, [d.box for d in boxed])
    timings["segment"] = time.perf_counter() - t
    backends = {"detect": "sphinx_vi", "segment": segmenter.backend}
    warnings = list(answer.warnings)
    edited = None
    if edit is not None:
        if inpainter is None:
            raise ValueError("an edit needs an inpainter")
        if edit == "replace" and not replace_prompt:
            raise ValueError("replace needs a prompt describing the new content")
        if edit == "replace" and inpainter.backend == "opencv-telea":
            warnings.append("classical inpainting cannot follow a prompt: the objects were removed instead")
        t = time.perf_counter()
        mask = union_mask(masks, img.size, settings.dilation)
        edited = inpainter.inpaint(img, mask, replace_prompt if edit == "replace" else None, settings)
        timings["inpaint"] = time.perf_counter() - t
        backends["inpaint"] = inpainter.backend
    return ChainResult(img, answer.text, answer.detections, masks, edited, backends, timings, warnings)
