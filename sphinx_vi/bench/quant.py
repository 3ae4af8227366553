"""Quantized and bf16 inference against fp32, one model, one held-out set: `python -m sphinx_vi.bench.quant --out FILE.json`.

For each of fp32, bf16, int8 and nf4 (the LLM's linears through bitsandbytes; the rest fp32):
weight memory (as stored), load time, greedy decode tokens/s at batch 1 (a REC prompt, exactly
`--new-tokens` tokens, median of `--reps`), and REC Acc@0.5 on the first `--limit` questions of a
held-out synthetic world (seed 1), decoded as the API decodes them.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import command_parser, machine, write_json

VARIANTS: dict[str, dict[str, Any]] = {"fp32": {}, "bf16": {"dtype": "bfloat16"}, "int8": {"quantization": "int8"},
                                       "nf4": {"quantization": "nf4"}}


def measure(model: str, variant: str, heldout: Path, limit: int, new_tokens: int, reps: int) -> dict[str, Any]:
    from ..api import SphinxVi
    from ..eval.runner import evaluate
    from ..quantization import weight_bytes

    t = time.perf_counter()
    vi = SphinxVi.from_pretrained(model, **VARIANTS[variant])
    load_s = time.perf_counter() - t
    image = sorted((heldout / "images").glob("*.png"))[0]
    prompt = "Hãy cho biết toạ độ khung của vùng mà câu này mô tả: hình tròn màu đỏ."
    times = []
    for k in range(reps + 1):
        t = time.perf_counter()
        vi.ask(image, prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, constrain_boxes=False)
        if k:  # the first call warms up
            times.append(time.perf_counter() - t)
    report = evaluate(vi.generator, heldout, limit=limit, tasks=["rec"])
    return {"variant": variant, "weights_mb": weight_bytes(vi.model) / 2**20, "llm_weights_mb": weight_bytes(vi.model.language_model) / 2**20,
            "load_s": load_s, "answer_s": statistics.median(times), "decode_tokens_per_s": new_tokens / statistics.median(times),
            "rec_acc50": report["rec_acc50"], "rec_n": report["rec_n"]}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'variant':<8}{'weights MB':>12}{'LLM MB':>10}{'load s':>9}{'tokens/s':>10}{'REC Acc@0.5':>13}"]
    for r in rows:
        lines.append(f"{r['variant']:<8}{r['weights_mb']:>12.2f}{r['llm_weights_mb']:>10.2f}{r['load_s']:>9.2f}"
                     f"{r['decode_tokens_per_s']:>10.1f}{r['rec_acc50']:>13.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.quant", __doc__)
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--heldout-images", type=int, default=500)
    p.add_argument("--limit", type=int, default=400, help="held-out REC questions")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from ..data.world.generate import synthesize

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        heldout = Path(tmp)
        synthesize(heldout, args.heldout_images, seed=1, tasks=["rec"], progress=False)
        rows = [measure(args.model, v, heldout, args.limit, args.new_tokens, args.reps) for v in args.variants]
    print(format_table(rows))
    if args.out:
        write_json(args.out, {"command": "python -m sphinx_vi.bench.quant " + " ".join(argv if argv is not None else sys.argv[1:]),
                              "machine": machine(),
                              "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
