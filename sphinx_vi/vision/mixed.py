"""The mixed visual encoder: several towers → one token grid → LLM-width tokens per view, in `VisualTokenLayout` order."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..views import ViewConfig
from .base import BACKENDS, EncoderSpec, GridFeatures, VisionBackend
from .layout import VisualTokenLayout
from .qformer import QFormer


@dataclass
class VisionConfig:
    """Typed view of `SphinxViConfig.vision`."""

    encoders: list[EncoderSpec] = field(default_factory=list)
    grid_size: int = 16  # G: every grid encoder is resized to G×G tokens (16 = ViT-L/14 at 224)
    merge_2x2: bool = False  # VILA: concatenate 2×2 neighbours (4C) before projecting, G²/4 tokens
    views_grid: int = 2  # K (see ViewConfig)
    resolution: int = 224  # R (see ViewConfig)
    global_from_high: bool = False  # the global view downsampled from the K·R image (SPHINX-1k; see ViewConfig)
    position_features: int = 0  # F > 0: add a learned map of 2-D Fourier features of each grid token's
    # absolute position on the padded square (same frame as text coordinates); 0 = off (SPHINX)
    projector: Literal["linear_ln", "mlp2x_gelu"] = "linear_ln"  # SPHINX's Linear+LayerNorm, or LLaVA-1.5's MLP
    cls_token: bool = True  # a global (cls) token per view before the grid (LLaVA drops it)
    image_markers: bool = True  # learned begin/end-of-view embeddings around each view (LLaVA has none)
    skip_grid_tokens: int = 0  # grid tokens dropped from the start of each view: LLaVA's "patch" selection drops a
    # tower's first token, which on SigLIP (no cls) is the first patch, so Vistral-V keeps 255 of 16×16
    pad_colour: list[int] | None = None  # canvas colour of the padded square; None = the first encoder's mean,
    # rounded (LLaVA and SPHINX truncate: int(mean·255), written here by their presets and converters)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
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
    def view_config(self) -> ViewConfig:
        return ViewConfig(grid=self.views_grid, resolution=self.resolution, global_from_high=self.global_from_high)

    @property
    def layout(self) -> VisualTokenLayout:
        """The per-view token order and counts this configuration produces."""
        queries = self.qformer_spec.num_queries if self.qformer_spec is not None else 0
        return VisualTokenLayout(views=self.view_config, grid=self.grid_size // (2 if self.merge_2x2 else 1),
                                 queries=queries, cls=self.cls_token, markers=self.image_markers, skip=self.skip_grid_tokens)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoders"] = [e.to_dict() for e in self.encoders]
        return out


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


def tower_path(spec: EncoderSpec) -> str:
    """Where the tower of `spec` sits inside `MixedVisionEncoder` (its state-dict prefix there, no dot)."""
    if spec.backend == "qformer":
        return "qformer"
    return f"{'sources' if spec.role == 'source' else 'encoders'}.{spec.name}"


class MixedVisionEncoder(nn.Module):
    """Views (N, V, 3, R, R) in [0, 1] → visual tokens (N, V·T, D), T = `layout.tokens_per_view`.

    Its parameters are of two kinds: the *towers* (the encoders and the Q-Former, pretrained and
    frozen by default) and the *adapters* this module adds around them (the projectors, the
    position map, the begin/end embeddings and each tower's own adapters, such as the Q-Former's
    source Linear), always trained with the projector.
    """

    def __init__(self, config: VisionConfig, backends: list[VisionBackend], llm_width: int) -> None:
        super().__init__()
        if config.merge_2x2 and config.grid_size % 2:
            raise ValueError(f"merge_2x2 needs an even grid_size, got {config.grid_size}")
        if not 0 <= config.skip_grid_tokens < config.layout.grid**2:
            raise ValueError(f"skip_grid_tokens must be in 0..{config.layout.grid ** 2 - 1}, got {config.skip_grid_tokens}")
        self.config = config
        self.layout = config.layout
        self.grid_size = config.grid_size
        self.merge_2x2 = config.merge_2x2
        grid_backends = [b for b in backends if b.produces_grid and b.spec.role == "grid"]
        source_backends = [b for b in backends if b.produces_grid and b.spec.role == "source"]
        query_backends = [b for b in backends if not b.produces_grid]
        if not grid_backends:
            raise ValueError("the mixed encoder needs at least one grid encoder (clip_convnext, clip_vit, dinov2, siglip)")
        if len(query_backends) > 1:
            raise ValueError("at most one qformer encoder is supported")
        names = [b.spec.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder names must be unique, got {names}")
        self.encoders = nn.ModuleDict({b.spec.name: b for b in grid_backends})
        self.sources = nn.ModuleDict({b.spec.name: b for b in source_backends})  # towers only the Q-Former reads
        in_width = sum(b.width for b in grid_backends) * (4 if self.merge_2x2 else 1)
        self.projector = _projector(config.projector, in_width, llm_width)
        self.qformer: QFormer | None = query_backends[0] if query_backends else None  # type: ignore[assignment]
        if self.qformer is not None:
            source = self.qformer.spec.source or ""
            readable = {**self.grid_encoders, **self.source_encoders}
            if source not in readable:
                raise ValueError(f"qformer source {source!r} is not an encoder of this model; choose from {list(readable)}")
            self.qformer.bind_source(readable[source].width)
            self.qformer_projector = nn.Sequential(nn.Linear(self.qformer.width, llm_width), nn.LayerNorm(llm_width))
        if source_backends and (self.qformer is None or (self.qformer.spec.source or "") not in self.sources):
            raise ValueError("a source-only encoder (role: source) must be the one the qformer reads")
        self.position_proj: nn.Linear | None = None
        if config.position_features > 0:
            self.position_proj = nn.Linear(4 * config.position_features, llm_width)
        self.image_begin: nn.Parameter | None = None  # learned begin/end-of-view embeddings (when the layout has them)
        self.image_end: nn.Parameter | None = None
        if config.image_markers:
            self.image_begin = nn.Parameter(torch.zeros(llm_width))
            self.image_end = nn.Parameter(torch.zeros(llm_width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the layers this module owns (the towers initialise themselves)."""
        for head in self._adapter_modules():
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        for marker in self._markers():
            nn.init.normal_(marker, std=0.02)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the projector (what the towers' inputs are cast to)."""
        return next(self.projector.parameters()).dtype

    @property
    def towers(self) -> list[VisionBackend]:
        """Every pretrained tower: the grid encoders, then the Q-Former if there is one."""
        return [*self.grid_encoders.values(), *self.source_encoders.values()] + ([self.qformer] if self.qformer is not None else [])

    @property
    def grid_encoders(self) -> dict[str, VisionBackend]:
        """The grid encoders by name, in channel-concatenation order (`encoders`, typed)."""
        return {name: enc for name, enc in self.encoders.items() if isinstance(enc, VisionBackend)}

    @property
    def source_encoders(self) -> dict[str, VisionBackend]:
        """Towers only the Q-Former reads (`role: source`), by name."""
        return {name: enc for name, enc in self.sources.items() if isinstance(enc, VisionBackend)}

    def _adapter_modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = [self.projector]
        if self.qformer is not None:
            modules.append(self.qformer_projector)
        if self.position_proj is not None:
            modules.append(self.position_proj)
        return modules + [m for tower in self.towers for m in tower.adapters()]

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The layers this module adds around the towers: projectors, position map, begin/end, tower adapters."""
        return [p for m in self._adapter_modules() for p in m.parameters()] + self._markers()

    def _markers(self) -> list[nn.Parameter]:
        return [p for p in (self.image_begin, self.image_end) if p is not None]

    def tower_parameters(self) -> list[nn.Parameter]:
        """The towers' own (pretrained) parameters, their adapters excluded."""
        return [p for tower in self.towers for p in tower.tower_parameters()]

    def set_towers_trainable(self, trainable: bool) -> None:
        """Unfreeze (or freeze) every tower, Q-Former included; its train/eval mode follows. Adapters are untouched."""
        for tower in self.towers:
            tower.spec.trainable = trainable
        for p in self.tower_parameters():
            p.requires_grad_(trainable)

    def _fourier_positions(self) -> torch.Tensor:
        """(V, g², 4F): sin/cos of x and y at F octaves of every grid token's centre (`layout.cell_boxes`)."""
        boxes = self.layout.cell_boxes()  # (V, g², 4)
        x = ((boxes[..., 0] + boxes[..., 2]) / 2).unsqueeze(-1)  # (V, g², 1)
        y = ((boxes[..., 1] + boxes[..., 3]) / 2).unsqueeze(-1)
        freqs = torch.pi * 2.0 ** torch.arange(self.config.position_features, dtype=torch.float32)  # (F,)
        x, y = x * freqs, y * freqs  # (V, g², F)
        return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)  # (V, g², 4F)

    def _grid_tokens(self, features: GridFeatures, mode: str = "bicubic") -> torch.Tensor:
        """(cls (B, C), grid (B, C, h, w)) → (B, 1 + G², C) on the common G×G grid (`mode`: bicubic or nearest)."""
        grid = features.grid
        G = self.grid_size
        if grid.shape[-2:] != (G, G):
            if mode == "nearest":  # an integer factor repeats each token (SPHINX's repeat_interleave)
                grid = F.interpolate(grid, size=(G, G), mode="nearest")
            else:
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
        per_encoder = {name: self._grid_tokens(enc(views), enc.spec.grid_resize) for name, enc in self.grid_encoders.items()}
        tokens = torch.cat(list(per_encoder.values()), dim=-1)  # (N·V, 1 + G², ΣC)
        if self.merge_2x2:
            tokens = self._merge(tokens)  # (N·V, 1 + G²/4, 4ΣC)
        projected = self.projector(tokens)  # (N·V, 1 + g², D)
        cls, grid = projected[:, :1], projected[:, 1:]  # (N·V, 1, D), (N·V, g², D)
        if self.position_proj is not None:
            # computed per call (a few KB), not a buffer: buffers built on the meta device by
            # `from_pretrained` would hold garbage
            fourier = self._fourier_positions().to(grid.device, grid.dtype)
            grid = grid + self.position_proj(fourier).repeat(N, 1, 1)  # (N·V, g², D), views image-major like `views`
        queries = None
        if self.qformer is not None:
            source = self.qformer.spec.source or ""
            if source in per_encoder:  # a grid encoder: its tokens on the common grid
                read = per_encoder[source]
            else:  # a source-only tower: its own tokens, as many as it makes (SPHINX: EVA's 257)
                f = self.source_encoders[source](views)
                read = torch.cat([f.cls.unsqueeze(1), f.grid.flatten(2).transpose(1, 2)], dim=1)  # (N·V, 1 + h·w, C)
            queries = self.qformer_projector(self.qformer(read))  # (N·V, Q, D)
        grid = grid[:, self.layout.skip :]  # (N·V, g² − skip, D)
        markers = (self.image_begin, self.image_end) if self.layout.markers else (None, None)
        per_view = self.layout.assemble(grid, cls if self.layout.cls else None, queries, *markers)  # (N·V, T, D)
        return per_view.reshape(N, V * per_view.shape[1], per_view.shape[-1])  # (N, V·T, D)
