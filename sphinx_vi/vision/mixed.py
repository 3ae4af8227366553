"""The mixed visual encoder: several towers → one token grid → LLM-width tokens per view (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..views import ViewConfig
from .base import BACKENDS, EncoderSpec, GridFeatures, VisionBackend
from .qformer import QFormer


@dataclass
class VisionConfig:
    """Typed view of `SphinxViConfig.vision`."""

    encoders: list[EncoderSpec] = field(default_factory=list)
    grid_size: int = 16  # G: every grid encoder is resized to G×G tokens (16 = ViT-L/14 at 224)
    merge_2x2: bool = False  # VILA: concatenate 2×2 neighbours (4C) before projecting, G²/4 tokens
    views_grid: int = 2  # K (see ViewConfig)
    resolution: int = 224  # R (see ViewConfig)
    position_features: int = 0  # F > 0: add a learned map of 2-D Fourier features of each grid token's
    # absolute position on the padded square (same frame as text coordinates); 0 = off (SPHINX)
    projector: Literal["linear_ln", "mlp2x_gelu"] = "linear_ln"  # SPHINX's Linear+LayerNorm, or LLaVA-1.5's MLP
    cls_token: bool = True  # a global (cls) token per view before the grid (LLaVA drops it)
    image_markers: bool = True  # learned begin/end-of-view embeddings around each view (LLaVA has none)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VisionConfig":
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown vision field(s) {sorted(unknown)}; valid: {sorted(known)}")
        data["encoders"] = [e if isinstance(e, EncoderSpec) else EncoderSpec.from_dict(e) for e in data.get("encoders", [])]
        return cls(**data)

    @property
    def qformer_spec(self) -> EncoderSpec | None:
        return next((e for e in self.encoders if e.backend == "qformer"), None)

    @property
    def num_views(self) -> int:
        return 1 if self.views_grid == 1 else 1 + self.views_grid**2

    @property
    def tokens_per_view(self) -> int:
        """[begin] + Q-Former queries + [cls] + G² grid tokens (G²/4 merged) + [end]."""
        queries = self.qformer_spec.num_queries if self.qformer_spec is not None else 0
        grid = self.grid_size**2 // (4 if self.merge_2x2 else 1)
        return 2 * self.image_markers + queries + self.cls_token + grid

    @property
    def tokens_per_image(self) -> int:
        return self.num_views * self.tokens_per_view

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoders": [e.to_dict() for e in self.encoders],
            "grid_size": self.grid_size,
            "merge_2x2": self.merge_2x2,
            "views_grid": self.views_grid,
            "resolution": self.resolution,
            "position_features": self.position_features,
            "projector": self.projector,
            "cls_token": self.cls_token,
            "image_markers": self.image_markers,
        }


def _projector(kind: str, in_width: int, out_width: int) -> nn.Sequential:
    """Visual features → LLM width: `linear_ln` (SPHINX) or `mlp2x_gelu` (LLaVA-1.5, same layer names as its 0/2)."""
    if kind == "linear_ln":
        return nn.Sequential(nn.Linear(in_width, out_width), nn.LayerNorm(out_width))
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))
    raise ValueError(f"unknown projector {kind!r}; choose linear_ln or mlp2x_gelu")


def build_backend(spec: EncoderSpec, *, load_weights: bool = False, allow_download: bool = False) -> VisionBackend:
    """Instantiate the registered backend for `spec` (random init, or its pretrained weights)."""
    if spec.backend not in BACKENDS:
        raise ValueError(f"unknown vision backend {spec.backend!r}; registered: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[spec.backend].build(spec, load_weights=load_weights, allow_download=allow_download)


def grid_cell_boxes(config: VisionConfig) -> torch.Tensor:
    """(V, g², 4): the square (x1, y1, x2, y2) each grid token covers on the padded square, in
    normalised coordinates (the frame the text grammar writes); g = G, or G/2 after the 2×2 merge."""
    g = config.grid_size // (2 if config.merge_2x2 else 1)
    edges = torch.arange(g, dtype=torch.float32) / g  # (g,) left/top edge of each cell in its view
    ys, xs = torch.meshgrid(edges, edges, indexing="ij")  # (g, g)
    out = []
    for x0, y0, span in ViewConfig(grid=config.views_grid, resolution=config.resolution).frames:
        x1, y1 = (x0 + span * xs).reshape(-1), (y0 + span * ys).reshape(-1)  # (g²,)
        out.append(torch.stack([x1, y1, x1 + span / g, y1 + span / g], dim=-1))  # (g², 4)
    return torch.stack(out)  # (V, g², 4)


def visual_token_boxes(config: VisionConfig) -> torch.Tensor:
    """(V·T, 4): the box every visual token of one image covers, NaN for tokens that cover no cell
    (begin/end markers, Q-Former queries, cls). Rows follow the encoder's output order."""
    cells = grid_cell_boxes(config)  # (V, g², 4)
    V, cells_per_view = cells.shape[:2]
    out = torch.full((V, config.tokens_per_view, 4), float("nan"))
    first = int(config.image_markers) + (config.qformer_spec.num_queries if config.qformer_spec else 0) + int(config.cls_token)
    out[:, first : first + cells_per_view] = cells
    return out.reshape(V * config.tokens_per_view, 4)


class MixedVisionEncoder(nn.Module):
    """Views (N, V, 3, R, R) in [0, 1] → visual tokens (N, V·T, D), T = tokens per view.

    Per view: [begin] [Q-Former queries] [cls] [G² grid tokens (or G²/4 merged)] [end].
    """

    def __init__(self, config: VisionConfig, backends: list[VisionBackend], llm_width: int) -> None:
        super().__init__()
        if config.merge_2x2 and config.grid_size % 2:
            raise ValueError(f"merge_2x2 needs an even grid_size, got {config.grid_size}")
        self.config = config
        self.grid_size = config.grid_size
        self.merge_2x2 = config.merge_2x2
        grid_backends = [b for b in backends if b.produces_grid]
        query_backends = [b for b in backends if not b.produces_grid]
        if not grid_backends:
            raise ValueError("the mixed encoder needs at least one grid encoder (clip_convnext, clip_vit, dinov2, siglip)")
        if len(query_backends) > 1:
            raise ValueError("at most one qformer encoder is supported")
        names = [b.spec.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder names must be unique, got {names}")
        self.encoders = nn.ModuleDict({b.spec.name: b for b in grid_backends})
        in_width = sum(b.width for b in grid_backends) * (4 if self.merge_2x2 else 1)
        self.projector = _projector(config.projector, in_width, llm_width)
        self.qformer: QFormer | None = query_backends[0] if query_backends else None  # type: ignore[assignment]
        if self.qformer is not None:
            source = self.qformer.spec.source
            if source not in self.encoders:
                raise ValueError(f"qformer source {source!r} is not a grid encoder; choose from {list(self.encoders)}")
            self.qformer.bind_source(self.encoders[source].width)
            self.qformer_projector = nn.Sequential(nn.Linear(self.qformer.width, llm_width), nn.LayerNorm(llm_width))
        self.position_proj: nn.Linear | None = None
        if config.position_features > 0:
            self.position_proj = nn.Linear(4 * config.position_features, llm_width)
        self.image_begin = nn.Parameter(torch.zeros(llm_width))  # learned begin/end-of-image embeddings
        self.image_end = nn.Parameter(torch.zeros(llm_width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the layers this module owns (the towers initialise themselves)."""
        heads = [self.projector] + ([self.qformer_projector] if self.qformer is not None else [])
        if self.position_proj is not None:
            heads.append(self.position_proj)
        if self.qformer is not None and isinstance(self.qformer.source_proj, nn.Linear):
            heads.append(self.qformer.source_proj)
        for head in heads:
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.image_begin, std=0.02)
        nn.init.normal_(self.image_end, std=0.02)

    @property
    def tokens_per_view(self) -> int:
        return self.config.tokens_per_view

    def set_towers_trainable(self, trainable: bool) -> None:
        """Unfreeze (or freeze) every tower, Q-Former included; its train/eval mode follows."""
        towers = [*self.encoders.values()] + ([self.qformer] if self.qformer is not None else [])
        for tower in towers:
            tower.spec.trainable = trainable
            for name, p in tower.named_parameters():
                if not name.startswith("source_proj"):
                    p.requires_grad_(trainable)

    @staticmethod
    def _fourier_positions(config: VisionConfig) -> torch.Tensor:
        """(V, g², 4F): sin/cos of x and y at F octaves of every grid token's centre (`grid_cell_boxes`)."""
        boxes = grid_cell_boxes(config)  # (V, g², 4)
        x = ((boxes[..., 0] + boxes[..., 2]) / 2).unsqueeze(-1)  # (V, g², 1)
        y = ((boxes[..., 1] + boxes[..., 3]) / 2).unsqueeze(-1)
        freqs = torch.pi * 2.0 ** torch.arange(config.position_features, dtype=torch.float32)  # (F,)
        x, y = x * freqs, y * freqs  # (V, g², F)
        return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)  # (V, g², 4F)

    def _grid_tokens(self, features: GridFeatures) -> torch.Tensor:
        """(cls (B, C), grid (B, C, h, w)) → (B, 1 + G², C) on the common G×G grid."""
        grid = features.grid
        G = self.grid_size
        if grid.shape[-2:] != (G, G):
            grid = F.interpolate(grid.float(), size=(G, G), mode="bicubic", align_corners=False).to(grid.dtype)
        grid = grid.flatten(2).transpose(1, 2)  # (B, G², C)
        return torch.cat([features.cls.unsqueeze(1), grid], dim=1)  # (B, 1 + G², C)

    def _merge(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + G², C) → (B, 1 + G²/4, 4C): each 2×2 neighbourhood concatenated; cls tiled 4×."""
        B, _, C = tokens.shape
        G = self.grid_size
        cls_token = tokens[:, :1].repeat(1, 1, 4)  # (B, 1, 4C)
        grid = tokens[:, 1:].reshape(B, G // 2, 2, G // 2, 2, C)  # (B, G/2, 2, G/2, 2, C)
        grid = grid.permute(0, 1, 3, 2, 4, 5).reshape(B, (G // 2) ** 2, 4 * C)  # (B, G²/4, 4C)
        return torch.cat([cls_token, grid], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, V, 3, R, R) → (N, V·T, D)."""
        N, V = pixel_values.shape[:2]
        views = pixel_values.flatten(0, 1)  # (N·V, 3, R, R)
        per_encoder = {name: self._grid_tokens(enc(views)) for name, enc in self.encoders.items()}
        tokens = torch.cat(list(per_encoder.values()), dim=-1)  # (N·V, 1 + G², ΣC)
        if self.merge_2x2:
            tokens = self._merge(tokens)  # (N·V, 1 + G²/4, 4ΣC)
        grid_tokens = self.projector(tokens)  # (N·V, T_grid, D)
        if self.position_proj is not None:
            # computed per call (a few KB), not a buffer: buffers built on the meta device by
            # `from_pretrained` would hold garbage
            fourier = self._fourier_positions(self.config).to(grid_tokens.device, grid_tokens.dtype)
            pos = self.position_proj(fourier)  # (V, g², D)
            pos = pos.repeat(N, 1, 1)  # (N·V, g², D), views in image-major order like `views`
            grid_tokens = torch.cat([grid_tokens[:, :1], grid_tokens[:, 1:] + pos], dim=1)  # cls has no position
        parts = [grid_tokens]
        if not self.config.cls_token:
            parts = [grid_tokens[:, 1:]]  # (N·V, g², D)
        if self.qformer is not None:
            queries = self.qformer(per_encoder[self.qformer.spec.source])  # (N·V, Q, H)
            parts.insert(0, self.qformer_projector(queries))  # queries come first in each view
        if self.config.image_markers:
            B, D = views.shape[0], parts[0].shape[-1]
            parts = [self.image_begin.view(1, 1, D).expand(B, 1, D), *parts, self.image_end.view(1, 1, D).expand(B, 1, D)]
        per_view = torch.cat(parts, dim=1)  # (N·V, T, D)
        return per_view.reshape(N, V * per_view.shape[1], per_view.shape[-1])  # (N, V·T, D)

