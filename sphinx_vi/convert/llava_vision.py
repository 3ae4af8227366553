"""The vision side of every LLaVA layout, as sphinx_vi config: one tower, a token selection, the MLP projector.

LLaVA feeds the LLM `hidden_states[select_layer]` of one vision tower, minus its first token for
the `patch` selection (`[:, 1:]`), through `mlp2x_gelu`, one view of the image padded to a square
in `int(mean·255)`. On CLIP the first token is the cls token (LLaVA-1.5: 576 of 577); SigLIP has
none, so the first patch goes (Vistral-V: 255 of 256). `cls_patch` keeps everything.
"""

from __future__ import annotations

from typing import Any, Literal

from transformers import PretrainedConfig

from ..vision.base import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD

# vision tower model_type → (our backend, whether its first token is a cls token, its processor's default mean/std)
TOWERS: dict[str, tuple[str, bool, tuple[float, ...], tuple[float, ...]]] = {
    "clip_vision_model": ("clip_vit", True, CLIP_MEAN, CLIP_STD),
    "siglip_vision_model": ("siglip", False, SIGLIP_MEAN, SIGLIP_STD),
}


class UnsupportedLlavaError(ValueError):
    """A LLaVA variant this importer does not reproduce exactly."""


def tower_config(config: PretrainedConfig) -> PretrainedConfig:
    """The vision config of a tower checkpoint (a full CLIP / SigLIP config holds it as `vision_config`)."""
    inner = getattr(config, "vision_config", None)
    return inner if isinstance(inner, PretrainedConfig) else config


def llava_vision(tower: PretrainedConfig, select_layer: int, select_feature: Literal["patch", "cls_patch"],
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> dict[str, Any]:
    """The sphinx_vi `vision` dict that computes LLaVA's image features with `tower`."""
    if tower.model_type not in TOWERS:
        raise UnsupportedLlavaError(f"vision tower {tower.model_type!r}: supported are {', '.join(TOWERS)}")
    if select_feature not in ("patch", "cls_patch"):
        raise UnsupportedLlavaError(f"mm_vision_select_feature {select_feature!r}: supported are patch and cls_patch")
    if not isinstance(select_layer, int):
        raise UnsupportedLlavaError(f"vision feature layer {select_layer!r}: several layers concatenated are not supported")
    size, patch = tower.image_size, tower.patch_size
    if size % patch:
        raise UnsupportedLlavaError(f"image_size {size} is not a multiple of patch_size {patch}")
    backend, has_cls, default_mean, default_std = TOWERS[tower.model_type]
    mean, std = tuple(mean or default_mean), tuple(std or default_std)
    arch = {k: v for k, v in tower.to_diff_dict().items() if k not in ("model_type", "transformers_version")}
    drop_first = select_feature == "patch"
    return {
        "encoders": [{"backend": backend, "arch": arch, "feature_layer": select_layer, "mean": list(mean), "std": list(std)}],
        "grid_size": size // patch,
        "views_grid": 1,
        "resolution": size,
        "projector": "mlp2x_gelu",
        "cls_token": has_cls and not drop_first,  # CLIP: `patch` drops the cls token
        "skip_grid_tokens": 1 if drop_first and not has_cls else 0,  # SigLIP: `patch` drops the first patch
        "image_markers": False,
        "pad_colour": [int(m * 255) for m in mean],  # LLaVA's expand2square colour
    }
