"""sphinx_vi against transformers' LLaVA on equal work: `python -m sphinx_vi.bench [--quick] --out FILE.json`.

Both engines hold the same weights (`bench.parity`); before anything is timed the suite asserts
equal logits, equal training losses (padded and packed), identical greedy ids and identical
multi-turn answers. Then every case runs interleaved A/B, each side in a fresh process (2
threads, fp32), warm-up then the median of the timed repeats; the ratio's spread is the range of
the per-process ratios. Cases: training step, packing (useful tokens/s), prefill and per-token
decode (batch 1 and 4), second chat turn, views K=1/2/3 and the 2×2 merge, data loader against
training consumption; peak RSS for each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..data import collate, collate_packed
from ..packed_attention import use_packed_attention
from . import command_parser, machine, write_json
from .memory import PeakRSS

RATIO_KEYS = {  # ratio key → (case, metric, higher_is_better_for_ours_metric)
    "train_ratio_vs_hf": ("train", "step_s"),
    "packing_ratio": ("packing", "useful_tokens_per_s"),
    "decode_ratio_vs_hf": ("decode", "decode_token_s_b1"),
    "multiturn_cache_ratio": ("multiturn", "turn2_first_token_s"),
}
TARGETS = {"train_ratio_vs_hf": 1.0, "packing_ratio": 1.5, "decode_ratio_vs_hf": 1.0, "multiturn_cache_ratio": 2.0}
AB_CASES = ("train", "packing", "decode", "multiturn")
NEW_TOKENS = 32
PACK_CAPACITY = 1024  # tokens per packed row (samples here are 260–450 tokens: 256 visual + text)


def pack_capacity(gen: Any) -> int:
    """Tokens per packed row: 1,024, or room for two of the longest samples when images bring more visual tokens."""
    return max(PACK_CAPACITY, 2 * (gen.processor.settings.tokens_per_image + 512))
TURN_TOKENS = 16
BATCH = 8


def _timed(fn: Callable[[], Any], iters: int, warmup: int = 2, prepare: Callable[[], None] | None = None) -> list[float]:
    times = []
    for k in range(warmup + iters):
        if prepare is not None:
            prepare()
        t = time.perf_counter()
        fn()
        if k >= warmup:
            times.append(time.perf_counter() - t)
    return times


# --- one case, one side, in this (fresh) process --------------------------------------------------
def run_worker(case: str, side: str, size: str, iters: int) -> dict[str, Any]:
    from .parity import build_pair
    from .workloads import batches, generate_fn, left_padded, make_workload, multiturn_fn, second_turn, train_step, useful_tokens

    torch.set_num_threads(2)
    hf, gen = build_pair(size)
    work = make_workload(gen, num=16 if size == "real" else 64)  # real: 2 batches an epoch, ~10 s a step here
    model = hf if side == "hf" else gen.model  # side: ours | hf | ours_padded (packing's third side)
    if side != "hf":
        del hf
    pad = 0
    metrics: dict[str, list[float]] = {}
    with PeakRSS() as mem:
        if case == "train":
            step = train_step(model, side, [collate(b, pad) for b in batches(work, BATCH)])
            metrics["step_s"] = _timed(step, iters)
        elif case == "packing":
            groups = batches(work, BATCH)
            layout = [collate_packed(b, pad, pack_capacity(gen)) if side == "ours" else collate(b, pad) for b in groups]
            if side == "ours":
                use_packed_attention(gen.model.language_model)  # what training with `packing: true` does
            step = train_step(model, side, layout)
            tokens = useful_tokens(work.samples)
            epoch = lambda: [step() for _ in layout]
            metrics["useful_tokens_per_s"] = [tokens / t for t in _timed(epoch, iters, warmup=1)]
        elif case == "decode":
            for b in (1, 4):
                ids, mask, views = left_padded(work.prompts[:b])
                one = generate_fn(model, side, ids, views, mask, 1)
                full = generate_fn(model, side, ids, views, mask, NEW_TOKENS)
                t1, tn = _timed(one, iters), _timed(full, iters)
                metrics[f"prefill_s_b{b}"] = t1
                metrics[f"decode_token_s_b{b}"] = [(n - o) / (NEW_TOKENS - 1) for n, o in zip(sorted(tn), sorted(t1))]
        elif case == "multiturn":
            image = work.images[0]
            history = second_turn(gen, image)
            for key, n in (("turn2_first_token_s", 1), ("turn2_s", TURN_TOKENS)):
                prepare, run = multiturn_fn(side, model, gen, image, history, n)
                metrics[key] = _timed(run, iters, prepare=prepare)
        else:
            raise ValueError(f"unknown case {case!r}")
    return {"case": case, "side": side, "size": size, "metrics": metrics,
            "median": {k: statistics.median(v) for k, v in metrics.items()},
            "peak_rss_mb": mem.peak / 2**20, "workload_rss_mb": (mem.peak - mem.start) / 2**20}


# --- checks before timing ---------------------------------------------------------------------
def parity_checks(size: str) -> dict[str, float]:
    """Equal logits, losses (padded, packed), greedy ids and multi-turn ids on both engines."""
    from .parity import build_pair, check_parity
    from .workloads import _inputs, batches, generate_fn, left_padded, make_workload, multiturn_fn, second_turn

    torch.set_num_threads(2)
    hf, gen = build_pair(size)
    work = make_workload(gen)
    out: dict[str, float] = {}
    ids, mask, views = left_padded(work.prompts[:4])
    out["logits_max_abs_diff"] = check_parity(hf, gen, ids, views, mask)
    batch = collate(batches(work, BATCH)[0], 0)
    with torch.no_grad():
        hf.train(), gen.model.train()
        l_hf = hf(**_inputs(batch, "hf")).loss
        l_ours = gen.model(**_inputs(batch, "ours")).loss
        restore = use_packed_attention(gen.model.language_model)
        l_packed = gen.model(**_inputs(collate_packed(batches(work, BATCH)[0], 0, pack_capacity(gen)), "ours")).loss
        gen.model.language_model.set_attn_implementation(restore)
        hf.eval(), gen.model.eval()
    torch.testing.assert_close(l_ours, l_hf, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l_packed, l_hf, rtol=1e-4, atol=1e-5)
    out["train_loss_abs_diff"] = float((l_ours - l_hf).abs())
    out["packed_loss_abs_diff"] = float((l_packed - l_hf).abs())
    for b in (1, 4):
        i, m, v = left_padded(work.prompts[:b])
        a = generate_fn(hf, "hf", i, v, m, NEW_TOKENS)()
        o = generate_fn(gen.model, "ours", i, v, m, NEW_TOKENS)()
        assert torch.equal(a, o), f"greedy ids differ at batch {b}"
    out["greedy_ids_equal"] = 1.0
    image = work.images[0]
    history = second_turn(gen, image)
    seqs = []
    for side, model in (("ours", gen.model), ("hf", hf)):
        prepare, run = multiturn_fn(side, model, gen, image, history, TURN_TOKENS)
        prepare()
        seqs.append(run())
    assert seqs[0] == seqs[1], "multi-turn: cached and re-encoded answers differ"
    out["multiturn_ids_equal"] = 1.0
    return out


# --- ours only --------------------------------------------------------------------------------
def views_table(iters: int) -> list[dict[str, Any]]:
    """Encoding one image with the tiny preset's towers at K = 1, 2, 3, with and without the 2×2 merge."""
    from PIL import Image

    from ..configuration import SphinxViConfig
    from ..modeling import SphinxViForConditionalGeneration
    from ..presets import preset_config_dict
    from ..views import ViewConfig, make_views

    torch.set_num_threads(2)
    rows = []
    image = Image.new("RGB", (320, 240), (200, 120, 40))
    for K in (1, 2, 3):
        for merge in (False, True):
            cfg = preset_config_dict("tiny")
            cfg["vision"] = {**cfg["vision"], "views_grid": K, "merge_2x2": merge}
            torch.manual_seed(0)
            model = SphinxViForConditionalGeneration(SphinxViConfig(**cfg)).eval()
            vc = ViewConfig(grid=K, resolution=cfg["vision"]["resolution"])
            views = make_views(image, vc, (122, 116, 104)).unsqueeze(0)
            with torch.inference_mode(), PeakRSS() as mem:
                encode: Callable[[], Any] = partial(model.encode_images, views)
                t = statistics.median(_timed(encode, iters))
            rows.append({"views_grid": K, "merge_2x2": merge, "views": vc.num_views, "visual_tokens": model.config.layout.tokens_per_image,
                         "encode_ms": 1000 * t, "peak_rss_mb": mem.peak / 2**20})
    return rows


# --- orchestration ------------------------------------------------------------------------------
def _spawn(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "sphinx_vi.bench", *args], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _sides(case: str) -> tuple[str, ...]:
    return ("ours", "hf", "ours_padded") if case == "packing" else ("ours", "hf")


def run_suite(sizes: list[str], reps: int, iters: int, loader: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    result: dict[str, Any] = {
        "machine": {**machine(), "platform": platform.platform(), "threads_per_side": 2,
                    "transformers": __import__("transformers").__version__, "dtype": "float32"},
        "protocol": f"{reps} interleaved A/B repetitions per case and size, each side a fresh process; "
                    f"{iters} timed calls after warm-up per process; ratio = median over all timed calls; "
                    "spread = min..max of the per-process ratios",
        "parity": {}, "cases": {},
    }
    for size in dict.fromkeys([*sizes, "tiny", "small"]):  # parity of both sizes is always checked
        result["parity"][size] = parity_checks(size)
        print(f"[bench] parity {size}: {result['parity'][size]}")
    jobs = [(size, case, rep) for size in sizes for case in AB_CASES for rep in range(reps)]
    raw: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for size, case, rep in tqdm(jobs, desc="A/B runs", dynamic_ncols=True):
        sides = _sides(case)
        order = sides if rep % 2 == 0 else tuple(reversed(sides))
        for side in order:
            r = _spawn(["--worker", case, side, size, "--iters", str(iters)])
            raw.setdefault((size, case), {}).setdefault(side, []).append(r)
    for (size, case), by_side in raw.items():
        result["cases"].setdefault(size, {})[case] = _summarise(case, by_side)
    if loader:
        from .loader import run as loader_run

        result["loader"] = loader_run(images=120, batch_size=8, batches=15)
    result["views"] = views_table(iters)
    main_size = sizes[0]
    for key, (case, metric) in RATIO_KEYS.items():
        r = result["cases"][main_size][case]["ratios"][metric]
        result[key] = r["ratio"]
        result[f"{key}_spread"] = [r["min"], r["max"]]
    result["ratio_size"] = main_size
    result["targets"] = TARGETS
    return result


def _higher_is_better(metric: str) -> bool:
    return metric.endswith("per_s")


def _summarise(case: str, by_side: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sides": {}, "ratios": {}}
    for side, runs in by_side.items():
        metrics = runs[0]["metrics"].keys()
        out["sides"][side] = {
            "median": {m: statistics.median([x for r in runs for x in r["metrics"][m]]) for m in metrics},
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "workload_rss_mb": max(r["workload_rss_mb"] for r in runs),
        }
    peers = [("ours", "hf")] + ([("ours", "ours_padded")] if "ours_padded" in by_side else [])
    for a, b in peers:
        for m in out["sides"][a]["median"]:
            if m not in out["sides"][b]["median"]:
                continue
            va, vb = out["sides"][a]["median"][m], out["sides"][b]["median"][m]
            per = [(ra["median"][m] / rb["median"][m]) if _higher_is_better(m) else (rb["median"][m] / ra["median"][m])
                   for ra, rb in zip(by_side[a], by_side[b])]
            key = m if b == "hf" else f"{m}_vs_ours_padded"
            out["ratios"][key] = {"ratio": (va / vb) if _higher_is_better(m) else (vb / va), "min": min(per), "max": max(per)}
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']['cpu']}, {r['machine']['cpus']} CPUs, 2 threads per side, fp32, "
             f"torch {r['machine']['torch']}, transformers {r['machine']['transformers']}", ""]
    lines.append(f"{'size':<6}{'case':<11}{'metric':<34}{'sphinx_vi':>12}{'HF LLaVA':>12}{'ratio':>8}{'spread':>16}"
                 f"{'RSS ours/HF MB':>18}")
    for size, cases in r["cases"].items():
        for case, c in cases.items():
            ours, hf = c["sides"]["ours"], c["sides"]["hf"]
            for m, v in ours["median"].items():
                if m not in hf["median"]:
                    continue
                q = c["ratios"][m]
                unit = "" if _higher_is_better(m) else " (ms)"
                scale = 1 if _higher_is_better(m) else 1000
                lines.append(f"{size:<6}{case:<11}{m + unit:<34}{v * scale:>12.2f}{hf['median'][m] * scale:>12.2f}"
                             f"{q['ratio']:>8.2f}{q['min']:>8.2f}..{q['max']:<6.2f}"
                             f"{ours['peak_rss_mb']:>9.0f}/{hf['peak_rss_mb']:<8.0f}")
            for m, q in c["ratios"].items():
                if m.endswith("_vs_ours_padded"):
                    lines.append(f"{size:<6}{case:<11}{'packing alone (ours packed/padded)':<34}{'':>24}{q['ratio']:>8.2f}"
                                 f"{q['min']:>8.2f}..{q['max']:<6.2f}")
    lines += ["", "ratios (ours ÷ HF, higher is better; target):"]
    for key in RATIO_KEYS:
        lo, hi = r[f"{key}_spread"]
        lines.append(f"  {key:<24}{r[key]:>7.2f}  (spread {lo:.2f}..{hi:.2f}; target ≥ {TARGETS[key]})")
    if "loader" in r:
        L = r["loader"]
        best = max(L["loader_vs_consumption"].values())
        lines.append(f"  loader vs training consumption: {best:.1f}× (best of 0/1/2 workers; target ≥ 3)")
    lines += ["", f"{'views K':<9}{'2x2 merge':<11}{'views':>6}{'visual tokens':>15}{'encode ms':>11}{'peak RSS MB':>13}"]
    for v in r.get("views", []):
        lines.append(f"{v['views_grid']:<9}{v['merge_2x2']!s:<11}{v['views']:>6}{v['visual_tokens']:>15}"
                     f"{v['encode_ms']:>11.1f}{v['peak_rss_mb']:>13.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench", __doc__)
    p.add_argument("--quick", action="store_true", help="tiny size only, 2 repetitions (under 10 minutes here)")
    p.add_argument("--sizes", default=None, help="comma list of parity sizes (tiny,small); default both, tiny with --quick")
    p.add_argument("--reps", type=int, default=None, help="A/B repetitions per case (default 3, 2 with --quick)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per process (default 7, 5 with --quick)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", nargs=3, metavar=("CASE", "SIDE", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    iters = args.iters or (5 if args.quick else 7)
    if args.worker:
        case, side, size = args.worker
        r = run_worker(case, side, size, iters)
        print("RESULT " + json.dumps(r))
        return 0
    sizes = args.sizes.split(",") if args.sizes else (["tiny"] if args.quick else ["tiny", "small"])
    reps = args.reps or (2 if args.quick else 3)
    t0 = time.perf_counter()
    r = run_suite(sizes, reps, iters)
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    r["command"] = "python -m sphinx_vi.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(format_table(r))
    write_json(args.out, r)
    return 0
