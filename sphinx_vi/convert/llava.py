"""transformers' LLaVA (`LlavaForConditionalGeneration`: a CLIP or SigLIP tower + MLP projector) → sphinx_vi.

The result computes the same function: one tower reading `vision_feature_layer`, LLaVA's token
selection (`default` drops the first token, `llava_vision`), the `mlp2x_gelu` projector,
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
from .llava_vision import UnsupportedLlavaError, llava_vision


def sphinx_vi_config_from_llava(config: LlavaConfig, tokenizer: str, chat_template: str | None = None) -> SphinxViConfig:
    """The sphinx_vi configuration that mirrors `config` layer for layer (`tokenizer`: where its tokenizer is)."""
    if config.projector_hidden_act != "gelu" or not getattr(config, "multimodal_projector_bias", True):
        raise UnsupportedLlavaError("only the gelu MLP projector with biases (LLaVA-1.5) is supported")
    strategy = {"default": "patch", "full": "cls_patch"}.get(config.vision_feature_select_strategy)
    if strategy is None:
        raise UnsupportedLlavaError(f"vision_feature_select_strategy {config.vision_feature_select_strategy!r}")
    vision = llava_vision(config.vision_config, config.vision_feature_layer, strategy)  # type: ignore[arg-type]
    text: Any = config.text_config
    return SphinxViConfig(vision=vision, text_config=text.to_dict(), tokenizer=tokenizer, chat_template=chat_template,
                          image_token_id=config.image_token_id, tie_word_embeddings=config.tie_word_embeddings)


@torch.no_grad()
def from_llava(llava: LlavaForConditionalGeneration, tokenizer: str, chat_template: str | None = None) -> SphinxViForConditionalGeneration:
    """A sphinx_vi model holding a copy of `llava`'s weights (logits equal on the same inputs)."""
    model = SphinxViForConditionalGeneration(sphinx_vi_config_from_llava(llava.config, tokenizer, chat_template))
    src = llava.model
    tower: Any = next(iter(model.vision.grid_encoders.values()))  # the one HF tower: `.model` is its vision model
    tower.model.load_state_dict(src.vision_tower.state_dict())
    proj = model.vision.projector
    for ours, theirs in ((proj[0], src.multi_modal_projector.linear_1), (proj[2], src.multi_modal_projector.linear_2)):
        ours.load_state_dict(theirs.state_dict())
    lm = model.language_model
    lm.model.load_state_dict(src.language_model.state_dict())
    lm.get_output_embeddings().load_state_dict(llava.lm_head.state_dict())
    return model.to(llava.dtype).eval()  # type: ignore[arg-type]  # transformers types `.to` oddly
