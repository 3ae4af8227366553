"""The chunked label loss equals the one-shot loss, value and gradients, and holds one chunk of logits at a time."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sphinx_vi.label_loss import cross_entropy_sum


def _case(n=37, d=16, vocab=50, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(d, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=g))
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    return head, hidden, torch.randint(0, vocab, (n,), generator=g)


@pytest.mark.parametrize("bias", [False, True])  # a plain Linear: fused; with a bias: the module, checkpointed
def test_chunks_give_the_one_shot_loss_and_gradients(bias):
    head, hidden, targets = _case(bias=bias)
    params = (hidden, head.weight, *((head.bias,) if bias else ()))
    full = F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    expected = torch.autograd.grad(full, params)
    chunked = cross_entropy_sum(head, hidden, targets, budget=50 * 8)  # 8 rows a chunk: 5 chunks
    got = torch.autograd.grad(chunked * 2.0, params)  # the upstream gradient is applied
    torch.testing.assert_close(chunked, full)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, 2.0 * e)


def test_bf16_autocast_stays_close_to_fp32():
    head, hidden, targets = _case(n=64, d=32, vocab=200)
    full = F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    gh, gw = torch.autograd.grad(full, (hidden, head.weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = cross_entropy_sum(head, hidden, targets, budget=200 * 16)
    ch, cw = torch.autograd.grad(chunked, (hidden, head.weight))
    assert chunked.dtype == torch.float32 and cw.dtype == head.weight.dtype
    torch.testing.assert_close(chunked, full, rtol=2e-2, atol=0)
    torch.testing.assert_close(cw, gw, rtol=0.05, atol=0.05 * float(gw.abs().max()))
    torch.testing.assert_close(ch, gh, rtol=0.05, atol=0.05 * float(gh.abs().max()))


def test_under_the_budget_it_is_one_plain_pass():
    head, hidden, targets = _case(n=5)
    calls = []
    head.register_forward_hook(lambda *_: calls.append(1))
    cross_entropy_sum(head, hidden, targets).backward()
    assert calls == [1]  # no chunking, no recomputation


def test_a_head_that_is_not_a_plain_linear_goes_through_the_module_a_chunk_at_a_time():
    head, hidden, targets = _case(n=64, vocab=100, bias=True)
    sizes = []
    head.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[0]))
    cross_entropy_sum(head, hidden, targets, budget=100 * 16).backward()
    assert max(sizes) == 16 and len(sizes) == 8  # 4 chunks forward, each recomputed once in backward
