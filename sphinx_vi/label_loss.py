"""Next-token cross-entropy over label positions, through the vocabulary projection in bounded chunks.

The loss needs logits only where a label follows, (n, vocab) rather than (B, L, vocab); with a
real vocabulary even those are large (8,192 labels × 38k words = 1.26 GB in fp32, and as much
again for their gradient). The fused path computes the loss and both gradients a chunk of rows at
a time in the forward pass (the gradient of the weight accumulated in place), so at most
`LOGIT_BUDGET` logits exist at once and no pass is repeated; backward only scales what it kept.
A head whose weight is not a plain local tensor (sharded by FSDP or ZeRO-3, quantized, with a
bias) goes through the module itself instead, a chunk at a time under activation checkpointing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LOGIT_BUDGET = 1 << 24  # logits held at once: 16M elements (64 MiB in fp32)


def cross_entropy_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, budget: int = LOGIT_BUDGET) -> torch.Tensor:
    """Σ cross-entropy of `head(hidden)` against `targets`: (n, D) hidden, (n,) targets → () fp32 sum."""
    vocab = int(head.weight.shape[0])  # type: ignore[index]  # a Linear-like head: (vocab, D)
    rows = max(1, budget // vocab)
    if hidden.shape[0] <= rows:
        return _module_loss(head, hidden, targets)
    if _plain_linear(head):
        return _FusedLinearCrossEntropy.apply(hidden, head.weight, targets, rows)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], rows):
        chunk = checkpoint(_module_loss, head, hidden[start : start + rows], targets[start : start + rows], use_reentrant=False)
        total = total + chunk
    return total


def _plain_linear(head: nn.Module) -> bool:
    weight = getattr(head, "weight", None)
    return (type(head) is nn.Linear and head.bias is None and isinstance(weight, torch.Tensor)
            and type(weight.data) is torch.Tensor and weight.numel() > 0 and weight.dtype.is_floating_point)


def _module_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")  # (rows, vocab) logits, fp32 softmax


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients of cross_entropy(hidden @ weight.T) computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(device, enabled=False):
            w = weight.to(compute)  # (V, D)
            grad_h = torch.empty_like(hidden) if want_h else None  # (n, D)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None  # (V, D)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden.shape[0], rows):
                h, t = hidden[start : start + rows].to(compute), targets[start : start + rows]  # (r, D), (r,)
                logits = (h @ w.T).float()  # (r, V)
                lse = torch.logsumexp(logits, dim=-1)  # (r,)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if want_h or want_w:
                    probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                    probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d loss / d logits
                    d_logits = probs.to(compute)
                    if grad_h is not None:
                        grad_h[start : start + rows] = (d_logits @ w).to(hidden.dtype)
                    if grad_w is not None:
                        if compute == torch.float32:
                            grad_w.addmm_(d_logits.T, h)
                        else:
                            grad_w += (d_logits.T @ h).float()
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = list(ctx.saved_tensors)  # ours alone: scaled in place, no second (V, D) buffer
        grad_h = saved.pop(0).mul_(grad_out) if ctx.needs_input_grad[0] else None
        grad_w = saved.pop(0).mul_(grad_out).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None, None
