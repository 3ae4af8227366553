"""Boxes and clicks → masks: Segment Anything when its checkpoint is on disk, OpenCV GrabCut otherwise."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from PIL import Image

from .clicks import MaskChoices, MaskPrompt, ordered

Box = Sequence[float]  # (x1, y1, x2, y2) pixels; any sequence (a Detection's box may be None-checked first)


class Segmenter(Protocol):
    backend: str

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        """(N, H, W) bool masks, one per box; (0, H, W) for no boxes."""

    def segment_prompt(self, image: Image.Image, prompt: MaskPrompt, multimask: bool = True) -> MaskChoices:
        """Candidate masks for the user's points and/or box, best first (`PromptError` for an unusable prompt)."""


def _empty(image: Image.Image) -> np.ndarray:
    return np.zeros((0, image.height, image.width), dtype=bool)


class GrabCutSegmenter:
    """Classical stand-in: GrabCut seeded by each box (OpenCV); a box too small for it becomes its own mask."""

    backend = "opencv-grabcut"

    def __init__(self, iterations: int = 3) -> None:
        self.iterations = iterations

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        if not len(boxes):
            return _empty(image)
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        out = np.zeros((len(boxes), h, w), dtype=bool)
        for i, box in enumerate(boxes):
            x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
            x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            if x2 - x1 < 4 or y2 - y1 < 4 or (x2 - x1) * (y2 - y1) >= 0.95 * w * h:
                out[i, y1:y2, x1:x2] = True  # GrabCut needs background around the box
                continue
            mask = np.zeros((h, w), np.uint8)
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: the same input gives the same mask
            cv2.grabCut(bgr, mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
            fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
            out[i] = fg if fg.any() else False
            if not fg.any():
                out[i, y1:y2, x1:x2] = True
        return out

    def segment_prompt(self, image: Image.Image, prompt: MaskPrompt, multimask: bool = True) -> MaskChoices:
        """One mask: GrabCut seeded with discs at the points (object / not) inside the box, or over the image."""
        p = prompt.checked(image.width, image.height)
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if p.box is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in p.box)
            mask[:] = cv2.GC_BGD
            mask[y1:y2, x1:x2] = cv2.GC_PR_FGD
        radius = max(3, round(0.02 * min(w, h)))
        for (x, y), label in zip(p.points, p.labels, strict=True):
            cv2.circle(mask, (int(x), int(y)), radius, cv2.GC_FGD if label else cv2.GC_BGD, thickness=-1)
        seeded = mask.copy()
        try:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)
            cv2.grabCut(bgr, mask, (0, 0, w, h), bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)  # rect unused with a mask
            fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        except cv2.error:  # too few pixels of one side to model (a box covering the image, a tiny image)
            fg = (seeded == cv2.GC_FGD) | (seeded == cv2.GC_PR_FGD)
        return MaskChoices(fg[None])


def sam_builders() -> dict:
    from segment_anything import sam_model_registry

    from .tiny_models import build_tiny_sam

    return {**sam_model_registry, "sphinx_vi_tiny": build_tiny_sam}


class SamSegmenter:
    """Segment Anything with box prompts: the image is embedded once, all boxes go in one batched call."""

    backend = "segment-anything"

    def __init__(self, model: torch.nn.Module) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)
        self._embedded: str | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, model_type: str = "vit_h", device: str | None = None) -> SamSegmenter:
        path = Path(checkpoint).expanduser()
        builders = sam_builders()
        if model_type not in builders:
            raise ValueError(f"unknown SAM type {model_type!r}; choose from {', '.join(builders)}")
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint {path} not found (download sam_vit_h_4b8939.pth or similar once, then pass its path)")
        try:
            model = builders[model_type](checkpoint=str(path))
        except RuntimeError as err:
            raise ValueError(f"{path} does not match SAM type {model_type!r} ({str(err)[:200]})") from None
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device))

    def _embed(self, image: Image.Image) -> None:
        arr = np.asarray(image.convert("RGB"))
        key = hashlib.sha1(arr.tobytes()).hexdigest() + str(arr.shape)
        if key != self._embedded:  # one embedding per image, reused across calls
            self.predictor.set_image(arr)
            self._embedded = key

    @torch.inference_mode()
    def segment_prompt(self, image: Image.Image, prompt: MaskPrompt, multimask: bool = True) -> MaskChoices:
        """SAM's point + box prompt on the kept embedding; with `multimask` its three candidates, by predicted IoU."""
        p = prompt.checked(image.width, image.height)
        self._embed(image)
        masks, scores, _ = self.predictor.predict(
            point_coords=np.asarray(p.points, dtype=np.float32) if p.points else None,
            point_labels=np.asarray(p.labels, dtype=np.int64) if p.points else None,
            box=np.asarray(p.box, dtype=np.float32) if p.box is not None else None,
            multimask_output=multimask)
        return ordered(masks.astype(bool), scores.tolist())  # (K, H, W)

    @torch.inference_mode()
    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        if not len(boxes):
            return _empty(image)
        self._embed(image)
        device = self.predictor.device
        t = torch.tensor([list(map(float, b)) for b in boxes], dtype=torch.float32, device=device)
        t = self.predictor.transform.apply_boxes_torch(t, (image.height, image.width))
        masks, _, _ = self.predictor.predict_torch(point_coords=None, point_labels=None, boxes=t, multimask_output=False)
        return masks[:, 0].cpu().numpy().astype(bool)  # (N, H, W)


def load_segmenter(checkpoint: str | Path | None, model_type: str = "vit_h") -> Segmenter:
    """SAM from a local checkpoint when one is named (it must exist), else the GrabCut stand-in."""
    return SamSegmenter.load(checkpoint, model_type) if checkpoint else GrabCutSegmenter()
