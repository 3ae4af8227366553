"""Proof that the whole pipeline learns, on a CPU, from scratch:

    python -m sphinx_vi.experiments.learn --out reports/learning

synthetic world (train seed 0, held-out seed 1) → stage 0 (the random-init towers learn to name
colour, kind and box digits under every grid token; the base both stage-1 runs share) → stage 1 on
real captions and on synthetic captions, towers frozen → merge (β = 0.5) → stage 2 with box-guided
attention → evaluation on the held-out seed, with REC
curves over stage-2 checkpoints. Ablations (unless --no-ablations): stage 2 from each single
stage-1 model (shorter, all three at the same budget), and stage 1 with text-only mixing off
(held-out text loss). Writes eval.json, loss curves, eval curves and README.md under --out, and
(with --embed) installs the stage-2 model as the embedded `tiny-shapes` checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..bench import machine
from ..data.world.generate import synthesize
from ..eval.gallery import draw_rec_gallery
from ..eval.record import EVALUATION_FILE, record_evaluation
from ..eval.runner import ROWS, evaluate, format_report
from ..factory import EMBEDDED_MODELS, load_checkpoint
from ..generation import Generator
from ..train.config import load_config
from ..train.launch import run_stage
from ..train.loop import resolve_precision
from ..train.merge import merge
from .towers import TowerPretrainConfig, pretrain_towers

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "train" / "configs"


def recipe_config(name: str, **overrides):
    """train/configs/`name` with `overrides` on top (the experiments' one way to configure a stage)."""
    return load_config(CONFIGS / name, overrides)


def stage_seeds(seed: int) -> dict[str, int]:
    """The seed of each phase of a run at `seed` (stage 0's init and scenes, each stage-1 run's data order, stage 2's);
    seed 0 gives the recipe's own seeds. The worlds do not move: train seed 0, held-out seed 1."""
    return {"stage0": seed, "stage1_real": 10 * seed + 1, "stage1_synthetic": 10 * seed + 2, "stage2": seed}


def generator_for(checkpoint: Path) -> Generator:
    """A greedy answerer over the checkpoint (what the eval runner asks)."""
    return Generator(*load_checkpoint(checkpoint))


def _checkpoint_curve(run: Path, heldout: Path, limit: int) -> list[dict]:
    """REC Acc@0.5 / Acc@0.3 / mean IoU of every saved stage-2 checkpoint on held-out samples."""
    gen = generator_for(run / "final")
    rows = []
    for ckpt in sorted((run / "checkpoints").glob("step-*[0-9]")):
        weights = ckpt / "model.safetensors"
        if not weights.exists():
            continue
        gen.model.load_state_dict(load_file(str(weights)), strict=False)
        step = int(ckpt.name.split("-")[1])
        r = evaluate(gen, heldout, limit=limit, tasks=["rec"])
        rows.append({"step": step, "rec_acc50": r["rec_acc50"], "rec_acc30": r["rec_acc30"], "rec_miou": r["rec_miou"]})
        print(f"[curve] step {step}: Acc@0.5 {r['rec_acc50']:.3f}  Acc@0.3 {r['rec_acc30']:.3f}  mIoU {r['rec_miou']:.3f}")
    return rows


def _plot_curve(rows: list[dict], baseline: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key, label in (("rec_acc50", "REC Acc@0.5"), ("rec_acc30", "REC Acc@0.3"), ("rec_miou", "REC mean IoU")):
        ax.plot(steps, [r[key] for r in rows], marker="o", label=label)
    ax.axhline(baseline, color="grey", linestyle="--", label="best constant box, Acc@0.5")
    ax.set_xlabel("stage-2 step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("held-out REC during stage 2")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@dataclass
class LearnConfig:
    """The learning run: where it writes, how big the worlds are, how long each stage trains."""

    out: Path  # the report (eval.json, README.md, curves, gallery)
    work: Path  # data and runs (deleted first)
    train_images: int = 4000
    heldout_images: int = 500
    eval_limit: int = 400  # held-out samples per task
    ablations: bool = True
    embed: bool = False  # install the stage-2 model as the embedded tiny-shapes checkpoint
    stage0_steps: int = 5000
    stage1_steps: int | None = None  # None: tiny_stage1.yaml's max_steps
    stage2_steps: int | None = None  # None: tiny_stage2.yaml's max_steps
    ablation_steps: int = 600
    seed: int = 0  # every phase's seed (stage_seeds); the worlds stay fixed
    processes: int = 2  # data-parallel processes for stages 1 and 2 (run_stage; same global batches): 2 one-thread
    #   processes make stage 2 1.19x faster than one two-thread process on 2 cores (0.446 vs 0.531 s a step)


class Laps:
    """Wall time of each phase, printed as it ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 1)
        print(f"[learn] {name}: {self.seconds[name]:.0f} s (total {time.perf_counter() - self.start:.0f} s)")


@dataclass
class Trained:
    """The checkpoints of the main pipeline."""

    data: Path
    heldout: Path
    stage1: dict[str, Any]  # overrides both stage-1 runs share (init, steps)
    real: Path
    synthetic: Path
    merged: Path
    final: Path
    stage2_steps: int
    precision: str  # what stage 2 computed in ("fp32" or "bf16")


def train_pipeline(cfg: LearnConfig, lap: Laps) -> Trained:
    """Synthesize both worlds, stage 0, stage 1 twice, merge, stage 2."""
    shutil.rmtree(cfg.work, ignore_errors=True)
    data, heldout = cfg.work / "data" / "train", cfg.work / "data" / "heldout"
    with lap("synthesize"):
        synthesize(data, cfg.train_images, seed=0)
        synthesize(heldout, cfg.heldout_images, seed=1)
    seeds = stage_seeds(cfg.seed)
    with lap("stage0"):
        base = pretrain_towers(TowerPretrainConfig(steps=cfg.stage0_steps, batch_size=32, init_seed=seeds["stage0"],
                                                   seed=seeds["stage0"]), cfg.work / "stage0")
    s1 = {"init": str(base), **({"max_steps": cfg.stage1_steps} if cfg.stage1_steps else {})}
    with lap("stage1_real"):
        real = run_stage(recipe_config("tiny_stage1.yaml", data=str(data), out=str(cfg.work / "stage1_real"), captions="real",
                                       seed=seeds["stage1_real"], **s1), cfg.processes)
    with lap("stage1_synthetic"):
        synth = run_stage(recipe_config("tiny_stage1.yaml", data=str(data), out=str(cfg.work / "stage1_synthetic"),
                                        captions="synthetic", seed=seeds["stage1_synthetic"], **s1), cfg.processes)
    merged = merge(real, synth, 0.5, cfg.work / "merged")
    s2 = dict(data=str(data), out=str(cfg.work / "stage2"), init=str(merged), keep_checkpoints=100, seed=seeds["stage2"],
              **({"max_steps": cfg.stage2_steps} if cfg.stage2_steps else {}))
    cfg2 = recipe_config("tiny_stage2.yaml", **s2)
    with lap("stage2"):
        final = run_stage(cfg2, cfg.processes)
    precision = resolve_precision(cfg2.precision)
    return Trained(data, heldout, s1, real, synth, merged, final, cfg2.max_steps, "fp32" if precision == "no" else precision)


def ablate(cfg: LearnConfig, run: Trained, lap: Laps) -> dict[str, Any]:
    """Stage 2 from each stage-1 model at one short budget (REC, VQA); stage 1 without text-only batches (text loss)."""
    out: dict[str, Any] = {}
    for name, init in (("merged", run.merged), ("real_only", run.real), ("synthetic_only", run.synthetic)):
        with lap(f"ablation_stage2_{name}"):
            model = run_stage(recipe_config("tiny_stage2.yaml", data=str(run.data), out=str(cfg.work / f"ablation_stage2_{name}"),
                                            init=str(init), max_steps=cfg.ablation_steps, save_every=cfg.ablation_steps,
                                            seed=stage_seeds(cfg.seed)["stage2"]), cfg.processes)
            r = evaluate(generator_for(model), run.heldout, limit=cfg.eval_limit, tasks=["rec", "vqa"])
            out[f"stage2_from_{name}"] = {k: v for k, v in r.items() if not k.startswith("_")}
    with lap("ablation_text_mixing"):
        no_text = run_stage(recipe_config("tiny_stage1.yaml", data=str(run.data), out=str(cfg.work / "stage1_synthetic_no_text"),
                                          captions="synthetic", seed=stage_seeds(cfg.seed)["stage1_synthetic"],
                                          text_loss_weight=0.0, **run.stage1), cfg.processes)
        out["stage1_text_loss_heldout"] = {
            "with_text_mixing": evaluate(generator_for(run.synthetic), run.heldout, limit=cfg.eval_limit, tasks=[])["text_loss"],
            "without_text_mixing": evaluate(generator_for(no_text), run.heldout, limit=cfg.eval_limit, tasks=[])["text_loss"],
        }
    out["stage2_steps"] = cfg.ablation_steps
    return out


def write_report(cfg: LearnConfig, run: Trained, report: dict[str, Any], result: dict[str, Any]) -> None:
    """eval.json, the loss and REC curves, the REC gallery and README.md under `cfg.out`; the embedded model if asked."""
    rec_results = report.get("_rec_results", [])
    if rec_results:
        draw_rec_gallery(rec_results[:16], cfg.out / "rec_examples.png")
    (cfg.out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for name in ("stage1_real", "stage1_synthetic", "stage2"):
        shutil.copy(cfg.work / name / "loss.png", cfg.out / f"loss_{name}.png")
        shutil.copy(cfg.work / name / "metrics.jsonl", cfg.out / f"metrics_{name}.jsonl")
    shutil.copy(cfg.work / "stage0" / "metrics.jsonl", cfg.out / "metrics_stage0.jsonl")
    if result["rec_curve"]:
        _plot_curve(result["rec_curve"], report["rec_acc50_baseline"], cfg.out / "rec_curve.png")
    if cfg.embed:
        target = EMBEDDED_MODELS["tiny-shapes"]
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run.final, target)
        record_evaluation(target, report, f"synthetic world, held-out seed 1 ({cfg.heldout_images} images)", cfg.eval_limit)
        print(f"[learn] embedded model installed at {target} (its held-out scores in {EVALUATION_FILE})")
    (cfg.out / "README.md").write_text(summary_markdown(result), encoding="utf-8")


def run(cfg: LearnConfig) -> dict[str, Any]:
    """The whole learning proof; returns what eval.json holds."""
    lap = Laps()
    cfg.out.mkdir(parents=True, exist_ok=True)
    trained = train_pipeline(cfg, lap)
    with lap("eval"):
        report = evaluate(generator_for(trained.final), trained.heldout, limit=cfg.eval_limit)
    with lap("eval_stage1_text"):  # the language the stage-2 model started from: is it kept?
        stage1_text = evaluate(generator_for(trained.merged), trained.heldout, limit=cfg.eval_limit, tasks=[])["text_loss"]
    print(format_report(report))
    with lap("eval_curve"):
        curve = _checkpoint_curve(cfg.work / "stage2", trained.heldout, limit=min(cfg.eval_limit, 200))
    rec_results = report.get("_rec_results", [])
    result = {k: v for k, v in report.items() if not k.startswith("_")}
    result.update({"rec_examples": [(r.question, r.answer) for r in rec_results[:5]], "rec_curve": curve,
                   "main_pipeline_minutes": round((time.perf_counter() - lap.start) / 60, 1), "timings_s": lap.seconds,
                   "train_images": cfg.train_images, "heldout_images": cfg.heldout_images, "eval_limit": cfg.eval_limit,
                   "stage2_steps": trained.stage2_steps, "stage0_steps": cfg.stage0_steps, "seed": cfg.seed,
                   "precision": trained.precision, "machine": machine(), "command": command(cfg),
                   "stage1_text_loss": stage1_text, "text_loss_vs_stage1": result_ratio(report["text_loss"], stage1_text)})
    if cfg.ablations:
        result["ablations"] = ablate(cfg, trained, lap)
    write_report(cfg, trained, report, result)
    return result


def result_ratio(value: float, reference: float) -> float:
    """value / reference, rounded for the report; inf when the reference is 0."""
    return round(value / reference, 3) if reference else float("inf")


def command(cfg: LearnConfig) -> str:
    """The command line that makes this run (every flag that differs from its default; not the work directory)."""
    default = LearnConfig(cfg.out, cfg.work)
    flags = [f"--out {cfg.out}"]
    for action in parser()._actions:
        if action.dest in ("help", "out", "work") or getattr(cfg, action.dest) == getattr(default, action.dest):
            continue
        flag = action.option_strings[0]
        flags.append(flag if action.nargs == 0 else f"{flag} {getattr(cfg, action.dest)}")
    return " ".join([".venv/bin/python -m sphinx_vi.experiments.learn", *flags])


def _command(r: dict) -> str:
    """The report's command (reports written before it was recorded: the recipe's command at their seed)."""
    return r.get("command") or (".venv/bin/python -m sphinx_vi.experiments.learn --out reports/learning --embed"
                                + (f" --seed {r['seed']}" if r.get("seed") else ""))


def _host(r: dict) -> str:
    """The CPU a report was measured on, in words (timings move between hosts of one cloud type)."""
    m = r.get("machine")
    return f"{m['cpus']} cores of an {m['cpu']} ({m['threads']} torch threads)" if m else "a 2-core CPU"


def summary_markdown(r: dict) -> str:
    lines = [
        "# Proof that it learns (tiny-shapes, CPU, from scratch)",
        "",
        f"Made by `{_command(r)}` on "
        f"{_host(r)}, {r.get('precision', 'fp32')} "
        f"(main pipeline {r['main_pipeline_minutes']} min: synthesize → stage 0 towers ({r.get('stage0_steps')} steps) → "
        "stage 1 real → stage 1 synthetic → merge β=0.5 → "
        f"stage 2 ({r['stage2_steps']} steps) → eval on held-out seed 1, {r['eval_limit']} samples per task; greedy answers, "
        f"{'boxes decoded to the grammar' if r.get('box_grammar', True) else 'boxes decoded unconstrained'}).",
        "",
        "| metric | model | trivial baseline | baseline is |",
        "| --- | --- | --- | --- |",
    ]
    for label, key, base, what in ROWS:
        if key in r:
            b = f"{r[base]:.3f}" if base and base in r else ""
            lines.append(f"| {label} | {r[key]:.3f} | {b} | {what} |")
    if "stage1_text_loss" in r:
        lines += ["", f"Language kept: the held-out plain-paragraph loss per token is {r['text_loss']:.3f} after stage 2 against "
                  f"{r['stage1_text_loss']:.3f} after stage 1 (the merged model stage 2 starts from): "
                  f"{r['text_loss_vs_stage1']:.2f}× (target ≤ 1.5×)."]
    lines += ["", "![REC during stage 2](rec_curve.png)", "",
              "The first 16 held-out REC questions (target green, model red; not picked):", "",
              "![REC answers on held-out images](rec_examples.png)", "", "Loss curves: ![stage 1 real](loss_stage1_real.png) "
              "![stage 1 synthetic](loss_stage1_synthetic.png) ![stage 2](loss_stage2.png)", ""]
    if "ablations" in r:
        a = r["ablations"]
        lines += ["## Ablations", "", f"Stage 2 for {a['stage2_steps']} steps from each stage-1 model (same data, same seed):", "",
                  "| stage 2 from | REC Acc@0.5 | REC Acc@0.3 | REC mIoU | VQA acc |", "| --- | --- | --- | --- | --- |"]
        for name in ("merged", "real_only", "synthetic_only"):
            x = a[f"stage2_from_{name}"]
            lines.append(f"| {name} | {x['rec_acc50']:.3f} | {x['rec_acc30']:.3f} | {x['rec_miou']:.3f} | {x['vqa_acc']:.3f} |")
        t = a["stage1_text_loss_heldout"]
        lines += ["", "Text-only mixing in stage 1 (synthetic captions), held-out text loss per token:", "",
                  "| stage 1 | held-out text loss |", "| --- | --- |",
                  f"| with text-only batches | {t['with_text_mixing']:.3f} |", f"| without | {t['without_text_mixing']:.3f} |", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings_s"].items()), "",
              "How this recipe was found (probes, diagnoses, commands): [history.md](history.md).", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line: one flag per `LearnConfig` field, its default the field's."""
    d = LearnConfig(Path("reports/learning"), Path("runs/learn"))
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.experiments.learn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--work", type=Path, default=d.work)
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--heldout-images", type=int, default=d.heldout_images)
    p.add_argument("--eval-limit", type=int, default=d.eval_limit, help="held-out samples per task")
    p.add_argument("--stage0-steps", type=int, default=d.stage0_steps,
                   help="stage-0 tower steps (kind recognition clicks in after ~2,000 and still rises at 4,000)")
    p.add_argument("--stage1-steps", type=int, default=d.stage1_steps, help="override tiny_stage1.yaml's max_steps")
    p.add_argument("--stage2-steps", type=int, default=d.stage2_steps, help="override tiny_stage2.yaml's max_steps")
    p.add_argument("--ablation-steps", type=int, default=d.ablation_steps)
    p.add_argument("--seed", type=int, default=d.seed,
                   help="every phase's seed (init, data order, dropout); the worlds stay fixed")
    p.add_argument("--processes", type=int, default=d.processes,
                   help="data-parallel processes for stages 1 and 2 (same global batches; one thread each on 2 cores)")
    p.add_argument("--no-ablations", dest="ablations", action="store_false")
    p.add_argument("--embed", action="store_true", help="install the result as the embedded tiny-shapes model")
    return p


def config_from_args(args: argparse.Namespace) -> LearnConfig:
    return LearnConfig(**{f.name: getattr(args, f.name) for f in fields(LearnConfig)})


def main() -> None:
    cfg = config_from_args(parser().parse_args())
    torch.set_num_threads(2)
    run(cfg)


if __name__ == "__main__":
    main()
