"""`qformer`: a BLIP-2 Q-Former (transformers Blip2QFormerModel) whose learned queries read another encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import Blip2Config, Blip2QFormerConfig, Blip2QFormerModel

from .base import EncoderSpec, VisionBackend, register_backend, resolve_weights


def _load_from_blip2_checkpoint(path: Path) -> tuple[Blip2QFormerModel, torch.Tensor]:
    """Pull the Q-Former and its query tokens out of a full BLIP-2 checkpoint without loading the LLM."""
    config = Blip2Config.from_pretrained(path)
    model = Blip2QFormerModel(config.qformer_config)  # type: ignore[arg-type]  # a Blip2QFormerConfig once loaded
    state: dict[str, torch.Tensor] = {}
    query_tokens = None
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has keys() but is not iterable
                if key.startswith("qformer."):
                    state[key[len("qformer.") :]] = f.get_tensor(key)
                elif key == "query_tokens":
                    query_tokens = f.get_tensor(key)
    if not state or query_tokens is None:
        raise ValueError(f"{path}: no 'qformer.*' / 'query_tokens' tensors found in its safetensors files")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise ValueError(f"{path}: Q-Former weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})")
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
            path = Path(ref)
            config_file = path / "config.json"
            if is_local and config_file.exists() and json.loads(config_file.read_text()).get("model_type") == "blip-2":
                model, queries = _load_from_blip2_checkpoint(path)
                spec.num_queries = queries.shape[1]
                return cls(spec, model, queries)
            model = Blip2QFormerModel.from_pretrained(ref, local_files_only=is_local or not allow_download)
            return cls(spec, model)
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
