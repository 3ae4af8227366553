"""What every vision backend is: a spec (config), a registry, and the module interface."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass
class EncoderSpec:
    """One encoder of the mixed front end, as written in a preset or a saved config."""

    backend: str  # registry key: clip_convnext | clip_vit | dinov2 | siglip | qformer
    name: str = ""  # unique name in the model (defaults to the backend)
    pretrained: str | None = None  # weights: local path first, hub id / open_clip tag if downloads are allowed
    arch: dict[str, Any] = field(default_factory=dict)  # architecture: HF config dict or open_clip model name
    image_size: int | None = None  # input side; None = the architecture's own
    mean: tuple[float, ...] = CLIP_MEAN  # the encoder's own pixel normalisation
    std: tuple[float, ...] = CLIP_STD
    trainable: bool = False  # towers are frozen by default (SPHINX)
    source: str | None = None  # qformer only: the encoder whose tokens it cross-attends to
    num_queries: int = 32  # qformer only: learned queries (32 in SPHINX / BLIP-2)
    feature_layer: int | None = None  # ViT towers: None = last layer after the final norm (SPHINX);
    # an index into the hidden states (LLaVA-1.5 uses -2, the penultimate layer, un-normed)
    role: Literal["grid", "source"] = "grid"  # source: a tower only the Q-Former reads, not concatenated into the
    # grid projector (SPHINX feeds its Q-Former BLIP-2's own EVA ViT-g)
    resize: Literal["bicubic", "nearest"] = "bicubic"  # how a view is brought to `image_size` (bicubic with
    # antialiasing; SPHINX's ConvNeXt: F.interpolate's default nearest, 224 → 256)
    grid_resize: Literal["bicubic", "nearest"] = "bicubic"  # how its token map is brought to the common G×G grid
    # (SPHINX repeats ConvNeXt's 8×8 map to 16×16: nearest)
    head_norm: bool = False  # clip_convnext: apply the trunk's head LayerNorm2d to the map (SPHINX keeps it)

    def __post_init__(self) -> None:
        self.name = self.name or self.backend
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoder field(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


class GridFeatures(NamedTuple):
    cls: torch.Tensor  # (B, C) global token (mean-pooled for backends without one)
    grid: torch.Tensor  # (B, C, h, w) patch tokens as a map


class VisionBackend(nn.Module, ABC):
    """A vision tower that takes views in [0, 1] and returns tokens; frozen unless `trainable`."""

    produces_grid: ClassVar[bool] = True  # False: a query backend (Q-Former) reading another encoder
    mean: torch.Tensor  # (1, 3, 1, 1) buffers: the encoder's own normalisation
    std: torch.Tensor

    @classmethod
    @abstractmethod
    def build(cls, spec: EncoderSpec, *, load_weights: bool, allow_download: bool) -> VisionBackend:
        """The backend for `spec`: random init from its `arch`, or (`load_weights`) its `pretrained` checkpoint."""

    def __init__(self, spec: EncoderSpec, width: int, input_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.width = width  # channels of its tokens
        self.input_size = input_size
        # Persistent, so a saved model carries its own normalisation.
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def trainable(self) -> bool:
        return self.spec.trainable

    def adapters(self) -> list[nn.Module]:
        """Layers this backend adds to its pretrained tower (always trained, never frozen with it)."""
        return []

    def tower_parameters(self) -> list[nn.Parameter]:
        """The pretrained tower's parameters: everything but `adapters()`."""
        adapter_ids = {id(p) for m in self.adapters() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in adapter_ids]

    def freeze_tower(self, tower: nn.Module) -> None:
        tower.requires_grad_(self.trainable)

    def train(self, mode: bool = True) -> VisionBackend:
        # A frozen tower stays in eval mode (dropout, drop-path off) while the model trains.
        super().train(mode)
        if not self.trainable:
            for child in self.children():
                child.eval()
        return self

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [0, 1] → (B, 3, S, S) resized to this encoder's size and normalised, in the tower's dtype.

        Resizing and normalising run in float32 (antialiased bicubic has no bf16 kernel on the CPU)."""
        dtype = pixels.dtype
        pixels = pixels.float()
        if pixels.shape[-1] != self.input_size or pixels.shape[-2] != self.input_size:
            size = (self.input_size, self.input_size)
            if self.spec.resize == "nearest":
                pixels = F.interpolate(pixels, size=size, mode="nearest")
            else:
                pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        return ((pixels - self.mean.float()) / self.std.float()).to(dtype)

    def grad_context(self) -> torch.autograd.grad_mode.set_grad_enabled:
        """No autograd graph through a frozen tower."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable)

    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """The `arch` dict that rebuilds this tower without its weights."""

    @abstractmethod
    def forward(self, pixels: torch.Tensor) -> GridFeatures:
        """(B, 3, R, R) views in [0, 1] → (cls, grid) features."""


BACKENDS: dict[str, type[VisionBackend]] = {}


def register_backend(name: str):
    """Class decorator: make a backend available under `name` in encoder specs."""

    def wrap(cls: type[VisionBackend]) -> type[VisionBackend]:
        BACKENDS[name] = cls
        return cls

    return wrap


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are neither on disk nor allowed to be downloaded."""


def allow_download_default() -> bool:
    """Downloads are off unless SPHINX_VI_ALLOW_DOWNLOAD=1 (or a caller passes allow_download=True)."""
    return os.environ.get("SPHINX_VI_ALLOW_DOWNLOAD", "0").lower() in ("1", "true", "yes")


def resolve_weights(ref: str, allow_download: bool, what: str) -> tuple[str, bool]:
    """Local path first: returns (path or id, is_local). A non-local ref needs `allow_download`."""
    path = Path(ref).expanduser()
    if path.exists():
        return str(path), True
    if not allow_download:
        raise WeightsNotFoundError(
            f"{what}: {ref!r} is not a local path. Download it once and pass the directory/file, "
            f"or allow hub downloads with allow_download=True (or SPHINX_VI_ALLOW_DOWNLOAD=1)."
        )
    return ref, False
