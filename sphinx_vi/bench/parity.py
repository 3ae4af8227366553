"""The parity pair: a tiny transformers LLaVA and the sphinx_vi model holding a copy of its weights.

Both sides see the same token ids and the same pixels (ours takes [0, 1] views and normalises
inside the tower; LLaVA takes them normalised). `check_parity` asserts equal logits before any
benchmark times anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

from ..convert import from_llava
from ..generation import Generator
from ..processing import SphinxViProcessor
from ..vision.base import CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class ParitySize:
    """One size of the pair. The vocabulary is Mistral's (32k): its projection is real work."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    vision_hidden: int
    vision_layers: int
    image_size: int = 224
    patch_size: int = 14  # 16×16 = 256 visual tokens: one SPHINX view (G = 16), CLIP ViT-L/14's patch
    vocab: int = 32000


SIZES = {
    "tiny": ParitySize("tiny", hidden=64, layers=2, heads=4, kv_heads=2, vision_hidden=64, vision_layers=2),
    "small": ParitySize("small", hidden=256, layers=4, heads=8, kv_heads=4, vision_hidden=256, vision_layers=4),
    # the real vocabulary and a K=2 view set's visual tokens (38 × 38 = 1,444 ≈ 1,455), as wide and deep as 2 cores allow
    "real": ParitySize("real", hidden=1024, layers=4, heads=16, kv_heads=4, vision_hidden=256, vision_layers=2,
                       image_size=532, vocab=38370),
}
IMAGE_TOKEN_ID = 4  # `<image>` in the built-in tokenizer; LLaVA is configured with the same id


def llava_config(size: ParitySize) -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=size.vision_hidden, intermediate_size=4 * size.vision_hidden,
                              num_hidden_layers=size.vision_layers, num_attention_heads=max(1, size.vision_hidden // 32),
                              image_size=size.image_size, patch_size=size.patch_size)
    text = MistralConfig(hidden_size=size.hidden, intermediate_size=int(3.5 * size.hidden), num_hidden_layers=size.layers,
                         num_attention_heads=size.heads, num_key_value_heads=size.kv_heads, vocab_size=size.vocab,
                         max_position_embeddings=2048, sliding_window=None, pad_token_id=0)
    patches = (size.image_size // size.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID, image_seq_length=patches,  # type: ignore[call-arg]
                       vision_feature_layer=-2, vision_feature_select_strategy="default")


def build_pair(size: str | ParitySize, seed: int = 0) -> tuple[LlavaForConditionalGeneration, Generator]:
    """(HF LLaVA, sphinx_vi with its weights), both fp32 eval, attention via SDPA on both sides."""
    size = SIZES[size] if isinstance(size, str) else size
    torch.manual_seed(seed)
    config = llava_config(size)
    config._attn_implementation = "sdpa"
    hf = LlavaForConditionalGeneration(config).eval()
    ours = from_llava(hf, tokenizer="builtin:tiny")
    ours.config.text_config._attn_implementation = "sdpa"
    processor = SphinxViProcessor.from_model_config(ours.config)
    assert processor.image_token_id == IMAGE_TOKEN_ID, processor.image_token_id
    return hf, Generator(ours, processor)


def normalise(views: torch.Tensor) -> torch.Tensor:
    """Our (N, 1, 3, R, R) views in [0, 1] → LLaVA's (N, 3, R, R) normalised pixel_values."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (views[:, 0] - mean) / std


@torch.no_grad()
def check_parity(hf: LlavaForConditionalGeneration, gen: Generator, input_ids: torch.Tensor, views: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> float:
    """assert_close on the logits of both sides; returns the largest absolute difference."""
    a = hf(input_ids=input_ids, pixel_values=normalise(views), attention_mask=attention_mask).logits
    b = gen.model(input_ids=input_ids, pixel_values=views, attention_mask=attention_mask).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    return float((a - b).abs().max())
