"""Attention for packed rows that costs Σ len² instead of row_len²: SDPA per sample, causal inside it.

Packed rows (`collate_packed`) restart `position_ids` at 0 for every sample. Plain SDPA then
needs a block-diagonal mask over the whole row, which costs a row_len² attention and, on the
CPU, the masked kernel. `sdpa_packed` (registered with transformers' `AttentionInterface`) cuts
each row at its position restarts and runs causal SDPA per sample — what flash-attention's
varlen kernel does on a GPU. Anything that is not a packed training row (a KV cache, a single
sample per row) goes to the stock SDPA function unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

PACKED_SDPA = "sdpa_packed"


def _segments(positions: torch.Tensor) -> list[list[int]]:
    """(B, L) positions → per row, the start index of every sample (where the position is 0)."""
    return [torch.nonzero(row == 0).flatten().tolist() for row in positions]


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs):
    """query (B, H, L, d), key/value (B, Hkv, L, d) → ((B, L, H, d), None)."""
    positions = kwargs.get("position_ids")
    B, H, L, _ = query.shape
    if positions is None or key.shape[2] != L or positions.shape[-1] != L:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    starts = _segments(positions.expand(B, L))
    if all(s == [0] for s in starts):  # one sample per row: nothing packed
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    key, value = repeat_kv(key, H // key.shape[1]), repeat_kv(value, H // value.shape[1])
    p = dropout if module.training else 0.0
    rows = []
    for b, cuts in enumerate(starts):
        bounds = [*cuts, L] if cuts and cuts[0] == 0 else [0, *cuts, L]
        parts = [F.scaled_dot_product_attention(query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                                                is_causal=True, dropout_p=p, scale=scaling)
                 for s, e in zip(bounds[:-1], bounds[1:])]  # each (1, H, len, d)
        rows.append(torch.cat(parts, dim=2))
    out = torch.cat(rows, dim=0)  # (B, H, L, d)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def use_packed_attention(language_model) -> str:
    """Switch an SDPA language model to `sdpa_packed`; returns the implementation to restore.

    Flash-attention already attends per sample from `position_ids`, eager gets the packed mask:
    those are left as they are.
    """
    current = language_model.config._attn_implementation
    if current == "sdpa":
        language_model.set_attn_implementation(PACKED_SDPA)
    return current
