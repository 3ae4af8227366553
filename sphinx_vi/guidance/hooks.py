"""The guided-attention loss: forward pre-hooks that recompute chosen heads' attention and score it against targets.

The attention of the first `heads` heads of each hooked layer is recomputed from the layer's own
q/k projections and rotary embedding (so any attention kernel can run the forward: SDPA, flash,
packed), inside a forward pre-hook, where FSDP and ZeRO-3 have the layer's weights gathered.
At each guided position it scores the attention with a `term` (−log mass on the focus for boxes,
−mean log attention over the focus for phrases), weighted by the position's query weight. The
model's forward, its saved weights and inference are untouched: the hooks only add a loss.

Supported attention classes are listed in `ROTARY` (each with its family's rotary function);
hooking any other model is refused with `UnsupportedGuideModelError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

from .targets import GuideTargets

Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Attention class → the rotary embedding it applies to q and k (same signature in each family).
ROTARY: dict[type[nn.Module], Callable] = {
    modeling_mistral.MistralAttention: modeling_mistral.apply_rotary_pos_emb,
    modeling_llama.LlamaAttention: modeling_llama.apply_rotary_pos_emb,
    modeling_qwen2.Qwen2Attention: modeling_qwen2.apply_rotary_pos_emb,
}


class UnsupportedGuideModelError(TypeError):
    """Guided attention was asked for on a language model whose attention it cannot recompute."""


def box_term(log_p: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """(Q, H, L) log attention, (Q, L) focus → (Q, H): −log of the attention mass on the focus."""
    return -log_p.masked_fill(~focus.unsqueeze(1), float("-inf")).logsumexp(-1)


def phrase_term(log_p: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """(Q, H, L) log attention, (Q, L) focus → (Q, H): −mean log attention over the focus tokens (its
    minimum spreads the head evenly over the whole phrase)."""
    on = focus.unsqueeze(1).to(log_p.dtype)  # (Q, 1, L)
    return -(log_p.masked_fill(~focus.unsqueeze(1), 0.0) * on).sum(-1) / on.sum(-1).clamp(min=1)


def _rotary_of(attn: Any) -> Callable:
    for cls in type(attn).__mro__:
        if cls in ROTARY:
            return ROTARY[cls]
    supported = ", ".join(c.__name__ for c in ROTARY)
    raise UnsupportedGuideModelError(
        f"guided attention cannot recompute the attention of {type(attn).__name__}; supported: {supported} "
        "(turn the guides off for this language model)"
    )


def _attention_layers(language_model: Any) -> list[Any]:
    decoder = language_model.get_decoder() if hasattr(language_model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise UnsupportedGuideModelError(
            f"guided attention needs a decoder with `layers[i].self_attn` (Llama-style); {type(language_model).__name__} has none"
        )
    return [layer.self_attn for layer in layers]


class AttentionGuide:
    """Hooks on the LLM's attention layers: `arm(targets)` before a forward, `pop_loss()` after it."""

    def __init__(self, language_model: Any, layers: list[int], heads: int, term: Term, option: str = "guide") -> None:
        attention = _attention_layers(language_model)
        n_layers, n_heads = len(attention), int(language_model.config.num_attention_heads)
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad or not layers:
            raise ValueError(f"{option}.layers {layers} must name layers of the {n_layers}-layer LLM")
        if not 1 <= heads <= n_heads:
            raise ValueError(f"{option}.heads must be in 1..{n_heads}, got {heads}")
        self.layers = sorted({i % n_layers for i in layers})
        self.heads, self.term = heads, term
        self._rotary = {i: _rotary_of(attention[i]) for i in self.layers}
        self._handles = [attention[i].register_forward_pre_hook(self._hook(i), with_kwargs=True) for i in self.layers]
        self._armed: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._sums: list[torch.Tensor] = []

    def arm(self, targets: GuideTargets, position_ids: torch.Tensor | None = None) -> None:
        """Use one micro-batch's targets in the next forward (packed rows: pass their `position_ids`)."""
        device = targets.focus.device if position_ids is None else position_ids.device
        segments = None if position_ids is None else (position_ids == 0).long().cumsum(-1)
        self._armed = (targets.query.to(device), targets.focus.to(device), segments)
        self._sums = []

    def _hook(self, layer: int):
        rotary = self._rotary[layer]

        def hook(attn: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            if self._armed is None or not torch.is_grad_enabled():
                return
            query, focus, segments = self._armed
            if not query.any():
                return
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, L, D), after the input norm
            cos, sin = kwargs["position_embeddings"]
            B, L, _ = hidden.shape
            hd, H = attn.head_dim, self.heads
            q = attn.q_proj(hidden).view(B, L, -1, hd)[:, :, :H].transpose(1, 2)  # (B, H, L, hd)
            k = attn.k_proj(hidden).view(B, L, -1, hd).transpose(1, 2)  # (B, H_kv, L, hd)
            groups = attn.config.num_attention_heads // attn.config.num_key_value_heads
            k = k[:, [h // groups for h in range(H)]]  # (B, H, L, hd): the kv head each guided head reads
            q, k = rotary(q, k, cos, sin)
            b_idx, q_idx = query.nonzero(as_tuple=True)  # (Q,), (Q,) guided positions, in row-major order
            scores = torch.cat([  # (Q, H, L): per row, its query positions against all its keys (no per-query key copies)
                (q[b][:, q_idx[b_idx == b]] @ k[b].transpose(-1, -2)).transpose(0, 1) for b in b_idx.unique().tolist()
            ]) * attn.scaling
            keys = torch.arange(L, device=hidden.device)
            visible = keys.unsqueeze(0) <= q_idx.unsqueeze(1)  # (Q, L) causal
            if segments is not None:
                visible &= segments[b_idx] == segments[b_idx, q_idx].unsqueeze(1)  # packed rows: own sample only
            log_p = scores.float().masked_fill(~visible.unsqueeze(1), float("-inf")).log_softmax(-1)  # (Q, H, L)
            weight = query[b_idx, q_idx].to(log_p.dtype)  # (Q,)
            self._sums.append((self.term(log_p, focus[b_idx, q_idx]).mean(-1) * weight).sum())  # Σ weight · head-mean term

        return hook

    def pop_loss(self) -> torch.Tensor | None:
        """Σ over this forward's (query, layer) terms of weight · term; None if there were none."""
        sums, self._sums, self._armed = self._sums, [], None
        return torch.stack(sums).sum() if sums else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
