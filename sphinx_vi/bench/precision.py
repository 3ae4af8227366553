"""Training step in fp32 and bf16, both engines, against this machine's matmul peak:
`python -m sphinx_vi.bench.precision --out FILE.json`.

The peak is measured in the same run (a square matmul on 2 threads, fp32 and bf16, best of the
sizes). Each (size, engine, precision) runs in a fresh process: the parity pair (`bench.parity`)
at that size, stage-2 batches of the synthetic world, one optimizer step per call (projector and
LLM learn), bf16 as autocast over fp32 master weights (what `precision: bf16` trains with). FLOPs
of one step are counted with `FlopCounterMode`; achieved FLOP/s over the precision's peak is the
MFU. Then greedy decoding at batch 1 in the same precision (bf16 weights for bf16), ms per new
token. Sizes (`bench.parity.SIZES`): `tiny`, `small` and `real`: the real vocabulary (38,370) and a
K=2 view set's visual tokens (1,444 ≈ 1,455 per image), at the width and depth this machine allows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from . import command_parser, machine, median_seconds, write_json
from .memory import PeakRSS

PRECISIONS = ("fp32", "bf16")
ENGINES = ("ours", "hf")
BATCHES = {"tiny": 8, "small": 8, "real": 2}
DECODE_TOKENS = 32


PEAK_SECONDS = 1.0  # time one size's timed matmuls may take; a dtype whose single matmul takes longer stops growing n


def matmul_peak(threads: int = 2) -> dict[str, float]:
    """Best GFLOP/s of an n×n matmul (n = 1024, 2048, 4096) per dtype: the machine's own peak.

    Each size is timed for about `PEAK_SECONDS` (at least one matmul after a warm-up). A dtype the CPU only emulates
    (bf16 without AVX-512 BF16 or AMX: about 1 GFLOP/s) stops at the first size whose one matmul takes longer than
    that, so the measurement takes seconds there too, not the quarter of an hour n = 4096 would."""
    torch.set_num_threads(threads)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for n in (1024, 2048, 4096):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            t = time.perf_counter()
            a @ b  # warm-up, and how long one takes
            one = time.perf_counter() - t
            reps = max(1, min(int(PEAK_SECONDS / max(one, 1e-6)), 50))
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
            if one > PEAK_SECONDS:
                break
        out[name] = best
    return out


def _setup(size_name: str, engine: str, precision: str) -> tuple[Any, Any, Any, Any]:
    """(workload, model, one training step per call, the precision's autocast) at a size, on 2 threads."""
    from ..data import collate
    from .parity import SIZES, build_pair
    from .workloads import batches, make_workload, train_step

    torch.set_num_threads(2)
    hf, gen = build_pair(SIZES[size_name])
    work = make_workload(gen, num=16 if size_name == "real" else 64)
    model = hf if engine == "hf" else gen.model
    step = train_step(model, engine, [collate(b, 0) for b in batches(work, BATCHES[size_name])])
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    return work, model, step, autocast


def worker(size_name: str, engine: str, precision: str, iters: int) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from .workloads import generate_fn, left_padded

    work, model, step, autocast = _setup(size_name, engine, precision)
    tokens = sum(len(s) for s in work.samples[: BATCHES[size_name]])
    with autocast():
        step()  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
        times = []
        with PeakRSS() as mem:
            for _ in range(iters):
                t = time.perf_counter()
                loss = step()
                times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    # inference in the same precision: bf16 weights (what SphinxVi(dtype="bfloat16") loads), greedy, batch 1
    model.eval().to(torch.bfloat16 if precision == "bf16" else torch.float32)
    ids, mask, views = left_padded(work.prompts[:1])
    one, full = (generate_fn(model, engine, ids, views, mask, n) for n in (1, DECODE_TOKENS))
    t1, _ = median_seconds(one, iters, warmup=1)
    tn, _ = median_seconds(full, iters, warmup=1)
    return {"size": size_name, "engine": engine, "precision": precision, "step_s": seconds, "step_s_all": times,
            "decode_token_s": (tn - t1) / (DECODE_TOKENS - 1), "prefill_s": t1,
            "flops_per_step": flops, "achieved_gflops": flops / seconds / 1e9, "tokens_per_step_approx": tokens,
            "peak_rss_mb": mem.peak / 2**20, "last_loss": loss}


def profile(size_name: str, engine: str, precision: str, out: Path | None) -> str:
    """torch.profiler over one training step: the operators by self CPU time (what dominates a step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    _, _, step, autocast = _setup(size_name, engine, precision)
    with autocast():
        step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    text = f"one training step, {size_name}, {engine}, {precision}, 2 threads\n{table}"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


def run(sizes: list[str], iters: int) -> dict[str, Any]:
    peak = matmul_peak()
    print(f"[precision] matmul peak, 2 threads: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    rows = []
    for size in sizes:
        for engine in ENGINES:
            for precision in PRECISIONS:
                proc = subprocess.run([sys.executable, "-m", "sphinx_vi.bench.precision", "--worker", size, engine, precision,
                                       "--iters", str(iters)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-3000:])
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["mfu"] = row["achieved_gflops"] / peak[precision]
                rows.append(row)
                print(f"[precision] {size} {engine} {precision}: {row['step_s']:.3f} s/step, MFU {row['mfu']:.1%}", flush=True)
    result: dict[str, Any] = {"matmul_peak_gflops": peak, "rows": rows, "machine": machine()}
    for size in sizes:
        by = {(r["engine"], r["precision"]): r for r in rows if r["size"] == size}
        result.setdefault("ratios", {})[size] = {
            "ours_bf16_vs_ours_fp32": by["ours", "fp32"]["step_s"] / by["ours", "bf16"]["step_s"],
            "hf_bf16_vs_hf_fp32": by["hf", "fp32"]["step_s"] / by["hf", "bf16"]["step_s"],
            "ours_vs_hf_fp32": by["hf", "fp32"]["step_s"] / by["ours", "fp32"]["step_s"],
            "ours_vs_hf_bf16": by["hf", "bf16"]["step_s"] / by["ours", "bf16"]["step_s"],
            "decode_ours_bf16_vs_fp32": by["ours", "fp32"]["decode_token_s"] / by["ours", "bf16"]["decode_token_s"],
            "decode_hf_bf16_vs_fp32": by["hf", "fp32"]["decode_token_s"] / by["hf", "bf16"]["decode_token_s"],
            "decode_ours_vs_hf_fp32": by["hf", "fp32"]["decode_token_s"] / by["ours", "fp32"]["decode_token_s"],
            "decode_ours_vs_hf_bf16": by["hf", "bf16"]["decode_token_s"] / by["ours", "bf16"]["decode_token_s"],
        }
        result.setdefault("mfu", {})[size] = {f"{e}_{p}": by[e, p]["mfu"] for e in ENGINES for p in PRECISIONS}
    return result


def format_table(r: dict[str, Any]) -> str:
    p = r["matmul_peak_gflops"]
    lines = [f"training step, 2 threads; matmul peak fp32 {p['fp32']:.0f} / bf16 {p['bf16']:.0f} GFLOP/s",
             f"{'size':<6}{'engine':<7}{'prec':<6}{'s/step':>9}{'GFLOP/step':>12}{'GFLOP/s':>9}{'MFU':>7}{'RSS MB':>8}{'ms/token':>10}"]
    for row in r["rows"]:
        lines.append(f"{row['size']:<6}{row['engine']:<7}{row['precision']:<6}{row['step_s']:>9.3f}{row['flops_per_step'] / 1e9:>12.1f}"
                     f"{row['achieved_gflops']:>9.1f}{row['mfu']:>7.1%}{row['peak_rss_mb']:>8.0f}{row['decode_token_s'] * 1e3:>10.2f}")
    for size, ratios in r["ratios"].items():
        lines.append(f"{size}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.precision", __doc__)
    p.add_argument("--sizes", default="tiny,small,real")
    p.add_argument("--iters", type=int, default=5, help="timed steps per process")
    p.add_argument("--worker", nargs=3, metavar=("SIZE", "ENGINE", "PRECISION"), help=argparse.SUPPRESS)
    p.add_argument("--profile", nargs=3, metavar=("SIZE", "ENGINE", "PRECISION"), help="profile one step instead (torch.profiler)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.profile:
        size, engine, precision = args.profile
        print(profile(size, engine, precision, out=args.out))
        return 0
    if args.worker:
        size, engine, precision = args.worker
        print(json.dumps(worker(size, engine, precision, iters=args.iters)))
        return 0
    result = run(args.sizes.split(","), args.iters)
    print(format_table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
