"""Masks → edited image: Stable Diffusion inpainting (diffusers) from a local directory, OpenCV Telea otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter

REMOVE_PROMPT = "empty background, seamless natural continuation of the surroundings"
REMOVE_NEGATIVE = "object, person, animal, text, watermark, artifacts"


@dataclass
class EditSettings:
    """Knobs of an edit; the same for every backend (the classical one ignores what it cannot use)."""

    dilation: int = 8  # grow the mask by this many pixels so edges are covered
    blur: int = 4  # feather the paste-back seam by this many pixels
    strength: float = 0.99  # diffusion: how much of the masked region is regenerated
    guidance: float = 7.5  # diffusion: classifier-free guidance scale
    steps: int = 30  # diffusion: denoising steps
    seed: int = 0  # diffusion: sampling seed
    max_side: int = 512  # diffusion works at this long side (multiple of 8), then pastes back


def union_mask(masks: np.ndarray, size: tuple[int, int], dilation: int = 0) -> Image.Image:
    """(N, H, W) bool → one L-mode mask (255 inside), grown by `dilation` pixels."""
    w, h = size
    mask = masks.any(axis=0) if len(masks) else np.zeros((h, w), bool)
    out: Any = np.asarray(mask, dtype=np.uint8) * 255  # (H, W)
    if dilation > 0 and out.any():
        k = 2 * dilation + 1
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return Image.fromarray(out, mode="L")


def fit_to_multiple_of_8(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Aspect-preserving (w, h) with the long side ≤ max_side and both sides multiples of 8."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return max(8, int(round(w * scale / 8)) * 8), max(8, int(round(h * scale / 8)) * 8)


def paste_back(original: Image.Image, generated: Image.Image, mask: Image.Image, blur: int) -> Image.Image:
    """Only the (feathered) masked region of `generated` replaces the original; the rest stays byte-identical."""
    generated = generated.convert("RGB").resize(original.size, Image.Resampling.LANCZOS)
    alpha = mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask
    alpha = Image.fromarray(np.where(np.asarray(mask) > 0, np.maximum(np.asarray(alpha), 1), 0).astype(np.uint8), mode="L")
    return Image.composite(generated, original.convert("RGB"), alpha)


class Inpainter(Protocol):
    backend: str

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None, settings: EditSettings) -> Image.Image:
        """`prompt` None removes (fills with background); a prompt replaces."""


class TeleaInpainter:
    """Classical stand-in (OpenCV Telea): fills the mask from its surroundings; cannot follow a prompt."""

    backend = "opencv-telea"

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None, settings: EditSettings) -> Image.Image:
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
        m = (np.asarray(mask) > 0).astype(np.uint8) * 255
        if not m.any():
            return image.convert("RGB")
        radius = max(3, settings.dilation)
        filled = cv2.inpaint(bgr, m, radius, cv2.INPAINT_TELEA)
        return paste_back(image, Image.fromarray(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB)), mask, settings.blur)


class DiffusersInpainter:
    """`AutoPipelineForInpainting` from a local directory; fp16 on a GPU, fp32 on the CPU."""

    backend = "diffusers"

    def __init__(self, pipeline) -> None:
        self.pipe = pipeline

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> DiffusersInpainter:
        from diffusers import AutoPipelineForInpainting

        path = Path(directory).expanduser()
        if not (path / "model_index.json").exists():
            raise FileNotFoundError(f"{path}: not a diffusers pipeline directory (no model_index.json)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = AutoPipelineForInpainting.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        if hasattr(pipe, "safety_checker") and getattr(pipe, "safety_checker", None) is None:
            pipe.requires_safety_checker = False
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device))

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None, settings: EditSettings) -> Image.Image:
        if not np.asarray(mask).any():
            return image.convert("RGB")
        w, h = fit_to_multiple_of_8(image.size, settings.max_side)
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        result = self.pipe(
            prompt=prompt or REMOVE_PROMPT,
            negative_prompt=None if prompt else REMOVE_NEGATIVE,
            image=image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS),
            mask_image=mask.resize((w, h), Image.Resampling.NEAREST),
            height=h,
            width=w,
            strength=settings.strength,
            guidance_scale=settings.guidance,
            num_inference_steps=settings.steps,
            generator=generator,
        ).images[0]
        return paste_back(image, result, mask, settings.blur)


def load_inpainter(directory: str | Path | None) -> Inpainter:
    """Diffusers from a local directory when one is named (it must exist), else the Telea stand-in."""
    return DiffusersInpainter.load(directory) if directory else TeleaInpainter()
