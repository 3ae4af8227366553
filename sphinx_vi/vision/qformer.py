"""`qformer`: a BLIP-2 Q-Former (transformers Blip2QFormerModel) whose learned queries read another encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ..weights import IncompleteWeightsError, check_complete
from .base import EncoderSpec, VisionBackend, register_backend, resolve_weights
from .blip2 import blip2_config, blip2_files, read_part


def _load_from_blip2_checkpoint(path: Path) -> tuple[Blip2QFormerModel, torch.Tensor]:
    """The Q-Former and its query tokens out of a full BLIP-2 checkpoint; every Q-Former weight must be there."""
    config = blip2_config(path)
    model = Blip2QFormerModel(config.qformer_config)  # type: ignore[arg-type]  # a Blip2QFormerConfig once loaded
    state = read_part(path, "qformer.")
    query_tokens = read_part(path, "query_tokens").get("")
    if query_tokens is None:
        raise IncompleteWeightsError(f"{path}: no 'query_tokens' tensor: the Q-Former would run with random queries")
    missing, unexpected = model.load_state_dict(state, strict=False)
    check_complete(f"{path} (Q-Former)", missing, unexpected)
    return model, query_tokens


@register_backend("qformer")
class QFormer(VisionBackend):
    """(B, T, C_src) tokens of `spec.source` → (B, Q, H) query outputs (H = Q-Former width)."""

    produces_grid = False

    def __init__(
        self, spec: EncoderSpec, model: Blip2QFormerModel, query_tokens: torch.Tensor | None = None
    ) -> None:
        if not spec.source:
            raise ValueError(f"encoder {spec.name!r}: a qformer needs `source`, the encoder it reads")
        super().__init__(spec, width=model.config.hidden_size, input_size=0)
        self.model = model
        self.freeze_tower(self.model)
        queries = torch.randn(1, spec.num_queries, model.config.hidden_size) * 0.02
        if query_tokens is not None:
            queries = query_tokens.reshape(1, -1, model.config.hidden_size)
        self.query_tokens = nn.Parameter(queries, requires_grad=self.trainable)
        self.source_proj: nn.Module = nn.Identity()  # set by `bind_source` once the source width is known

    @classmethod
    def build(cls, spec: EncoderSpec, *, load_weights: bool, allow_download: bool) -> QFormer:
        if load_weights and spec.pretrained:
            ref, is_local = resolve_weights(spec.pretrained, allow_download, f"encoder {spec.name!r}")
            model, queries = _load_from_blip2_checkpoint(blip2_files(ref, Path(ref) if is_local else None, ("qformer.", "query_tokens")))
            spec.num_queries = queries.shape[1]
            return cls(spec, model, queries)
        arch = {k: v for k, v in spec.arch.items() if k not in ("model_type", "transformers_version")}
        return cls(spec, Blip2QFormerModel(Blip2QFormerConfig(**arch)))

    def bind_source(self, source_width: int) -> None:
        """A trainable Linear maps the source tokens to the width the Q-Former's cross-attention expects."""
        expected = self.model.config.encoder_hidden_size
        self.source_proj = nn.Identity() if source_width == expected else nn.Linear(source_width, expected)

    def architecture(self) -> dict[str, Any]:
        return self.model.config.to_diff_dict()

    def adapters(self) -> list[nn.Module]:
        return [self.source_proj]

    def train(self, mode: bool = True) -> QFormer:
        super().train(mode)
        self.source_proj.train(mode)  # new, always-trained layer
        return self

    def forward(self, source_tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # No no-grad block here: gradients must reach `source_proj` through the frozen Q-Former.
        memory = self.source_proj(source_tokens)  # (B, T, H_enc)
        queries = self.query_tokens.expand(memory.shape[0], -1, -1)  # (B, Q, H)
        return self.model(query_embeds=queries, encoder_hidden_states=memory).last_hidden_state  # (B, Q, H)
