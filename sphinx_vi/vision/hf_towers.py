"""transformers ViT towers: `clip_vit` (CLIPVisionModel), `dinov2` (Dinov2Model), `siglip` (SiglipVisionModel),
`blip2_vision` (BLIP-2's EVA ViT-g)."""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import (
    Blip2VisionConfig,
    Blip2VisionModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from ..weights import check_complete
from .base import EncoderSpec, GridFeatures, VisionBackend, register_backend, resolve_weights
from .blip2 import blip2_config, blip2_files, read_part


class HFVisionTower(VisionBackend):
    """A transformers vision model; its tokens after the final norm become (cls, grid)."""

    model_class: ClassVar[type[PreTrainedModel]]
    config_class: ClassVar[type[PretrainedConfig]]
    has_cls: ClassVar[bool] = True

    def __init__(self, spec: EncoderSpec, model: PreTrainedModel) -> None:
        cfg = model.config
        super().__init__(spec, width=cfg.hidden_size, input_size=spec.image_size or cfg.image_size)
        self.model = model
        self.freeze_tower(self.model)

    @classmethod
    def build(cls, spec: EncoderSpec, *, load_weights: bool, allow_download: bool) -> HFVisionTower:
        if load_weights and spec.pretrained:
            ref, is_local = resolve_weights(spec.pretrained, allow_download, f"encoder {spec.name!r}")
            loaded: Any = cls.model_class.from_pretrained(ref, local_files_only=is_local or not allow_download,
                                                          output_loading_info=True)
            model, info = loaded  # (model, loading info)
            check_complete(f"encoder {spec.name!r} ({ref})", info["missing_keys"], (), info.get("mismatched_keys", ()))
        else:
            arch = {k: v for k, v in spec.arch.items() if k not in ("model_type", "transformers_version")}
            model = cls.model_class(cls.config_class(**arch))
        return cls(spec, model)

    def architecture(self) -> dict[str, Any]:
        return self.model.config.to_diff_dict()

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised → (B, N, C) tokens after the final norm (or of `spec.feature_layer`)."""
        if self.spec.feature_layer is not None:
            return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[self.spec.feature_layer]
        return self.model(pixel_values=pixels).last_hidden_state

    def forward(self, pixels: torch.Tensor) -> GridFeatures:
        with self.grad_context():
            tokens = self.tokens(self.preprocess(pixels))  # (B, [1+] h*w, C)
        patches = tokens[:, 1:] if self.has_cls else tokens
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise ValueError(f"encoder {self.spec.name!r}: {patches.shape[1]} patch tokens do not form a square grid")
        grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)  # (B, C, h, w)
        cls_token = tokens[:, 0] if self.has_cls else patches.mean(dim=1)
        return GridFeatures(cls=cls_token, grid=grid)


@register_backend("clip_vit")
class ClipViT(HFVisionTower):
    model_class = CLIPVisionModel
    config_class = CLIPVisionConfig

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        # CLIPVisionModel norms only the pooled token; SPHINX applies ln_post to all of them.
        if self.spec.feature_layer is not None:
            return super().tokens(pixels)
        return self.model.post_layernorm(self.model(pixel_values=pixels).last_hidden_state)  # type: ignore[operator]


def _dinov2_position_embeddings(embeddings: Any, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2's own position-embedding interpolation (facebookresearch/dinov2, the torch-hub models SPHINX runs):
    bicubic with scale factor (n + 0.1) / M, no antialiasing. transformers' port asks for the output size instead,
    which samples the trained grid at slightly other points."""
    table = embeddings.position_embeddings  # (1, 1 + M², C)
    patches, positions = tokens.shape[1] - 1, table.shape[1] - 1
    if patches == positions and height == width:
        return table
    patch = embeddings.patch_embeddings.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    w0, h0, M = width // patch, height // patch, math.isqrt(positions)
    grid = table[:, 1:].float().reshape(1, M, M, -1).permute(0, 3, 1, 2)  # (1, C, M, M)
    grid = torch.nn.functional.interpolate(grid, scale_factor=((w0 + 0.1) / M, (h0 + 0.1) / M), mode="bicubic", antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])  # (1, h0·w0, C)
    return torch.cat([table[:, :1].float(), grid], dim=1).to(table.dtype)


@register_backend("dinov2")
class DinoV2(HFVisionTower):
    model_class = Dinov2Model
    config_class = Dinov2Config

    def __init__(self, spec: EncoderSpec, model: PreTrainedModel) -> None:
        super().__init__(spec, model)
        embeddings: Any = model.embeddings
        embeddings.interpolate_pos_encoding = types.MethodType(_dinov2_position_embeddings, embeddings)


@register_backend("siglip")
class Siglip(HFVisionTower):
    model_class = SiglipVisionModel
    config_class = SiglipVisionConfig
    has_cls = False  # SigLIP has no cls token: the mean patch token stands in


@register_backend("blip2_vision")
class Blip2Vision(HFVisionTower):
    """BLIP-2's EVA ViT-g (Blip2VisionModel, after its post-layernorm): what SPHINX's Q-Former reads (`role: source`).

    Its weights come from a full BLIP-2 checkpoint (`vision_model.*`), never from anywhere else.
    """

    model_class = Blip2VisionModel
    config_class = Blip2VisionConfig

    @classmethod
    def build(cls, spec: EncoderSpec, *, load_weights: bool, allow_download: bool) -> HFVisionTower:
        if not (load_weights and spec.pretrained):
            return super().build(spec, load_weights=load_weights, allow_download=allow_download)
        ref, is_local = resolve_weights(spec.pretrained, allow_download, f"encoder {spec.name!r}")
        path = blip2_files(ref, Path(ref) if is_local else None, ("vision_model.",))
        model = Blip2VisionModel(blip2_config(path).vision_config)  # type: ignore[arg-type]
        missing, unexpected = model.load_state_dict(read_part(path, "vision_model."), strict=False)
        check_complete(f"encoder {spec.name!r} ({path}, BLIP-2 vision)", missing, unexpected)
        return cls(spec, model)
