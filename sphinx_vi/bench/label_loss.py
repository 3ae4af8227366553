"""Peak memory and time of the training loss at the real vocabulary: `python -m sphinx_vi.bench.label_loss --out FILE.json`.

One loss + backward through a (vocab × width) projection, each variant in a fresh process:
`all positions` (the (B, L, vocab) logits, as transformers' causal-LM loss builds them),
`label positions, one pass` (the (n, vocab) logits of the n labelled positions) and `label
positions, chunked` (sphinx_vi's loss: fused, at most `LOGIT_BUDGET` logits alive). Defaults: the
sphinx-vi-1k head (38,370 × 4096), a stage-2 batch of 4 rows × 2,048 tokens with 2,048 labels a row
(long answers: detection lists, grounded captions).
Peak RSS above the inputs, in MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import command_parser, write_json
from .memory import PeakRSS

VARIANTS = ("all positions", "label positions, one pass", "label positions, chunked")


def measure(variant: str, rows: int, length: int, labels: int, width: int, vocab: int, dtype: str) -> dict[str, Any]:
    from ..label_loss import cross_entropy_sum

    torch.manual_seed(0)
    kind = getattr(torch, dtype)
    head = nn.Linear(width, vocab, bias=False).to(kind)
    hidden = torch.randn(rows, length, width, dtype=kind, requires_grad=True)
    targets = torch.full((rows, length), -100)
    targets[:, -labels:] = torch.randint(0, vocab, (rows, labels))
    keep = targets != -100
    with PeakRSS() as mem:
        t = time.perf_counter()
        if variant == "all positions":
            loss = F.cross_entropy(head(hidden).float().flatten(0, 1), targets.flatten(), reduction="sum")
        elif variant == "label positions, one pass":
            loss = cross_entropy_sum(head, hidden[keep], targets[keep], budget=1 << 62)
        else:
            loss = cross_entropy_sum(head, hidden[keep], targets[keep])
        loss.backward()
        seconds = time.perf_counter() - t
    return {"variant": variant, "peak_mb": (mem.peak - mem.start) / 2**20, "seconds": seconds, "loss": float(loss)}


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.label_loss", __doc__)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--labels", type=int, default=2048, help="labelled positions per row")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=38370)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in this process
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    shape = [str(v) for v in ("--rows", args.rows, "--length", args.length, "--labels", args.labels, "--width", args.width,
                              "--vocab", args.vocab, "--dtype", args.dtype)]
    if args.variant is not None:
        print(json.dumps(measure(args.variant, args.rows, args.length, args.labels, args.width, args.vocab, args.dtype)))
        return 0
    results = []
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, "-m", "sphinx_vi.bench.label_loss", *shape, "--variant", variant],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"loss + backward, head {args.vocab:,} × {args.width}, {args.rows} rows × {args.length} tokens, {args.labels} labels a row, {args.dtype}")
    print(f"{'variant':<30}{'peak MB':>10}{'s':>8}{'loss':>14}")
    for r in results:
        print(f"{r['variant']:<30}{r['peak_mb']:>10.0f}{r['seconds']:>8.2f}{r['loss']:>14.1f}")
    write_json(args.out, {"rows": args.rows, "length": args.length, "labels": args.labels, "width": args.width, "vocab": args.vocab,
                          "dtype": args.dtype, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
