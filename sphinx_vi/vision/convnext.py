"""`clip_convnext`: the open_clip ConvNeXt trunk (real: convnext_xxlarge, laion2b_s34b_b82k_augreg_soup)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import timm
import torch
from timm.models import build_model_with_cfg, register_model
from timm.models.convnext import ConvNeXt

from .base import EncoderSpec, GridFeatures, VisionBackend, register_backend, resolve_weights

TINY_OPEN_CLIP_MODEL = "sphinx_vi_convnext_tiny"


@register_model
def sphinx_vi_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    """A four-stage ConvNeXt of a few thousand parameters: the tiny preset's CNN tower."""
    if pretrained:
        raise ValueError("sphinx_vi_convnext_tiny has no pretrained weights")
    kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or {"input_size": (3, 64, 64), "num_classes": 0}
    return build_model_with_cfg(
        ConvNeXt, "sphinx_vi_convnext_tiny", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), **kwargs
    )


def _register_open_clip_configs() -> None:
    if TINY_OPEN_CLIP_MODEL not in open_clip.list_models():
        folder = resources.files("sphinx_vi.assets").joinpath("open_clip")
        open_clip.add_model_config(str(folder))


_register_open_clip_configs()


def _timm_name(open_clip_model: str) -> str:
    cfg = open_clip.get_model_config(open_clip_model)
    if cfg is None or "timm_model_name" not in cfg.get("vision_cfg", {}):
        raise ValueError(f"open_clip model {open_clip_model!r} is not a timm (ConvNeXt) model")
    return cfg["vision_cfg"]["timm_model_name"]


def _open_clip_image_size(open_clip_model: str) -> int:
    size = open_clip.get_model_config(open_clip_model)["vision_cfg"].get("image_size", 224)
    return int(size if isinstance(size, int) else size[0])


def _open_clip_weights(directory: Path) -> Path:
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"{directory}: no open_clip weights (open_clip_model.safetensors or open_clip_pytorch_model.bin)")


@register_backend("clip_convnext")
class ClipConvNeXt(VisionBackend):
    """Feature map of stem+stages (B, C, h, w); its mean is the "cls" token, as in SPHINX."""

    def __init__(self, spec: EncoderSpec, trunk: Any) -> None:  # a timm ConvNeXt trunk
        if spec.feature_layer is not None:
            raise ValueError(f"encoder {spec.name!r}: feature_layer applies to ViT towers, not clip_convnext")
        model_name = spec.arch["open_clip_model"]
        super().__init__(spec, width=trunk.num_features, input_size=spec.image_size or _open_clip_image_size(model_name))
        self.trunk = trunk
        self.freeze_tower(self.trunk)

    @classmethod
    def build(cls, spec: EncoderSpec, *, load_weights: bool, allow_download: bool) -> ClipConvNeXt:
        model_name = spec.arch.get("open_clip_model")
        if not model_name:
            raise ValueError(f"encoder {spec.name!r}: arch needs 'open_clip_model' (e.g. 'convnext_xxlarge')")
        if load_weights and spec.pretrained:
            ref, is_local = resolve_weights(spec.pretrained, allow_download, f"encoder {spec.name!r}")
            if is_local and Path(ref).is_dir():  # an open_clip hub snapshot: its weights file
                ref = str(_open_clip_weights(Path(ref)))
            clip = open_clip.create_model(model_name, pretrained=ref, require_pretrained=True)  # strict load
            trunk: Any = clip.visual.trunk  # the text tower and the CLIP head are dropped
        else:
            trunk = timm.create_model(_timm_name(model_name), pretrained=False)
            trunk.reset_classifier(0)  # same module tree as open_clip's trunk
        return cls(spec, trunk)

    def architecture(self) -> dict[str, Any]:
        return dict(self.spec.arch)

    def forward(self, pixels: torch.Tensor) -> GridFeatures:
        with self.grad_context():
            fmap = self.trunk.forward_features(self.preprocess(pixels))  # (B, C, h, w)
            if self.spec.head_norm:
                fmap = self.trunk.head.norm(fmap)  # LayerNorm2d over channels, as the trunk's own head applies it
        return GridFeatures(cls=fmap.mean(dim=(2, 3)), grid=fmap)
