"""transformers' LLaVA-1.5 (`LlavaForConditionalGeneration`, CLIP ViT + MLP projector) → sphinx_vi.

The result computes the same function: one `clip_vit` encoder reading the penultimate layer
(`vision_feature_layer`), no cls token (`default` select strategy), the `mlp2x_gelu` projector,
no begin/end markers, one view (K=1) at the tower's resolution, and the same language model. A
LLaVA checkpoint becomes a starting point for our stage 2, and the parity harness of the
benchmarks (`sphinx_vi.bench`) compares the two engines on identical weights.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from ..configuration import SphinxViConfig
from ..modeling import SphinxViForConditionalGeneration
from ..vision.base import CLIP_MEAN, CLIP_STD


class UnsupportedLlavaError(ValueError):
    """A LLaVA variant this importer does not reproduce exactly."""


def sphinx_vi_config_from_llava(config: LlavaConfig, tokenizer: str = "builtin:tiny") -> SphinxViConfig:
    """The sphinx_vi configuration that mirrors `config` layer for layer."""
    v: Any = config.vision_config  # a CLIPVisionConfig (checked below)
    if v.model_type != "clip_vision_model":
        raise UnsupportedLlavaError(f"vision tower {v.model_type!r}: only CLIP ViT LLaVA models are supported")
    if config.projector_hidden_act != "gelu" or not getattr(config, "multimodal_projector_bias", True):
        raise UnsupportedLlavaError("only the gelu MLP projector with biases (LLaVA-1.5) is supported")
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise UnsupportedLlavaError(f"vision_feature_layer {layer!r}: several layers concatenated are not supported")
    if v.image_size % v.patch_size:
        raise UnsupportedLlavaError(f"image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
    arch = {k: val for k, val in v.to_diff_dict().items() if k not in ("model_type", "transformers_version")}
    vision = {
        "encoders": [{"backend": "clip_vit", "arch": arch, "feature_layer": layer, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}],
        "grid_size": v.image_size // v.patch_size,
        "views_grid": 1,
        "resolution": v.image_size,
        "projector": "mlp2x_gelu",
        "cls_token": config.vision_feature_select_strategy == "full",
        "image_markers": False,
    }
    if config.vision_feature_select_strategy == "full":
        raise UnsupportedLlavaError("vision_feature_select_strategy 'full' puts the cls token first; use 'default'")
    text: Any = config.text_config
    return SphinxViConfig(vision=vision, text_config=text.to_dict(), tokenizer=tokenizer,
                          image_token_id=config.image_token_id, tie_word_embeddings=config.tie_word_embeddings)


@torch.no_grad()
def from_llava(llava: LlavaForConditionalGeneration, tokenizer: str = "builtin:tiny") -> SphinxViForConditionalGeneration:
    """A sphinx_vi model holding a copy of `llava`'s weights (logits equal on the same inputs)."""
    model = SphinxViForConditionalGeneration(sphinx_vi_config_from_llava(llava.config, tokenizer))
    src = llava.model
    tower: Any = model.vision.grid_encoders["clip_vit"]  # an HF CLIP tower: `.model` is its CLIPVisionModel
    tower.model.load_state_dict(src.vision_tower.state_dict())
    proj = model.vision.projector
    for ours, theirs in ((proj[0], src.multi_modal_projector.linear_1), (proj[2], src.multi_modal_projector.linear_2)):
        ours.load_state_dict(theirs.state_dict())
    lm = model.language_model
    lm.model.load_state_dict(src.language_model.state_dict())
    lm.get_output_embeddings().load_state_dict(llava.lm_head.state_dict())
    return model.to(llava.dtype).eval()  # type: ignore[arg-type]  # transformers types `.to` oddly
