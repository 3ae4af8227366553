"""SPHINX "divide and conquer" views: pad to a square, a global view plus a K×K grid of crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .grounding.geometry import PaddedSquare


@dataclass(frozen=True)
class ViewConfig:
    """How an image becomes views. K=1 is plain SPHINX, K=2 SPHINX-1k (448 px), K=3 "2k" (672 px)."""

    grid: int = 2  # K: crops per side of the high-resolution image
    resolution: int = 224  # R: side of every view fed to the encoders
    global_from_high: bool = False  # the global view is the (K·R)² image downsampled (torch bicubic, no antialias),
    # as SPHINX-1k builds it, instead of the padded image resized to R

    def __post_init__(self) -> None:
        if self.grid < 1 or self.resolution < 1:
            raise ValueError(f"grid and resolution must be positive, got {self.grid}, {self.resolution}")

    @property
    def num_views(self) -> int:
        """Global view plus K² crops; K=1 has only the global view."""
        return 1 if self.grid == 1 else 1 + self.grid**2

    @property
    def frames(self) -> list[tuple[float, float, float]]:
        """(x0, y0, span) of every view on the padded square, in view order: the global view spans
        it all, crop (i, j) spans [j/K, (j+1)/K] × [i/K, (i+1)/K]."""
        K = self.grid
        return [(0.0, 0.0, 1.0)] + ([(j / K, i / K, 1.0 / K) for i in range(K) for j in range(K)] if K > 1 else [])


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Paste `image` centred on a square canvas of colour `fill` (offsets as in PaddedSquare)."""
    square = PaddedSquare(image.width, image.height)
    canvas = Image.new("RGB", (square.side, square.side), fill)
    canvas.paste(image, square.offset)
    return canvas


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB → (3, H, W) float in [0, 1]."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def make_views(image: Image.Image, config: ViewConfig, fill: tuple[int, int, int],
               resample: Image.Resampling = Image.Resampling.BICUBIC) -> torch.Tensor:
    """RGB image → (V, 3, R, R) in [0, 1]: global view, then crops row by row (TL, TR, BL, BR).

    `resample=Image.Resampling.NEAREST` cuts label maps exactly like their images (values stay whole).
    """
    R, K = config.resolution, config.grid
    square = pad_to_square(image, fill)
    if K == 1:
        return _to_tensor(square.resize((R, R), resample)).unsqueeze(0)  # (1, 3, R, R)
    hi = _to_tensor(square.resize((K * R, K * R), resample))  # (3, K*R, K*R)
    if config.global_from_high:
        views = [F.interpolate(hi.unsqueeze(0), size=(R, R), mode="bicubic", align_corners=False)[0]]  # (3, R, R)
    else:
        views = [_to_tensor(square.resize((R, R), resample))]  # (3, R, R)
    crops = hi.reshape(3, K, R, K, R).permute(1, 3, 0, 2, 4)  # (K, K, 3, R, R)
    views.extend(crops.reshape(K * K, 3, R, R))
    return torch.stack(views)  # (V, 3, R, R)
