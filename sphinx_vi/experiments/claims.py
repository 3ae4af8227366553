"""The seeds' design claims, measured in miniature: controlled comparisons at a fixed budget.

    python -m sphinx_vi.experiments.claims --out reports/learning/claims --work runs/claims [--claims beta,lora] [--seeds 0 1]

Every variant of every claim runs the learning pipeline (stage 0 → stage 1 real and synthetic → merge →
stage 2) at the same miniature budget on the same training world, and is scored on the same held-out
world (a small-object one for the sub-image claim), once per seed (the seed sets the init, the data
order and dropout). Phases a variant shares with another (same parent, same settings, same seed) are
trained once: each phase's output lives under a directory named by the hash of what made it, so an
interrupted run resumes where it stopped and adding a claim reuses what is there. Writes claims.json,
claims.md (per claim: a table of every variant's mean and range over the seeds, what the seed
paper says and what we measured, and a verdict) and one plot per claim.

A verdict compares the claimed-better variant with each other one on the claim's metric: "holds" when
its worst seed beats every other variant's best seed, "holds on the mean" when only the mean is
higher, "does not hold" otherwise (the direction is the metric's: lower is better for losses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.world.generate import synthesize
from ..data.world.shapes import WorldConfig
from ..eval import metrics as M
from ..eval.runner import evaluate, load_task, rec_targets
from ..train.merge import merge
from ..train.recipes import stage1, stage2
from .learn import generator_for, recipe_config, stage_seeds
from .runs import spread
from .towers import TowerPretrainConfig, pretrain_towers


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison: what it changes against the default pipeline."""

    name: str
    towers: tuple[str, ...] | None = None  # encoder backends kept (None: the preset's mix)
    views_grid: int | None = None  # sub-image views K (None: the preset's)
    stage1: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides of both stage-1 runs
    beta: float = 0.5  # merge weight of the real-caption model
    stage2: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides of stage 2


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    says: str  # what the seed paper claims, in one sentence
    variants: tuple[Variant, ...]
    better: str  # the variant the claim says wins
    metric: str = "rec_acc50"  # what decides the verdict (eval report key)
    also: tuple[str, ...] = ("rec_miou", "vqa_acc", "text_loss")  # reported beside it
    heldout: str = "heldout"  # "heldout" or "small_objects"
    tasks: tuple[str, ...] = ("rec", "vqa")  # the eval runner's tasks that give them (the text losses always come)
    after_stage1: bool = False  # also score the merged stage-1 model's text losses (as stage1_text_loss, ...)


LOWER_IS_BETTER = ("text_loss", "text_instruction_loss", "stage1_text_loss")
TEXT_OFF = {"text_loss_weight": 0.0}
CLAIMS: tuple[Claim, ...] = (
    Claim("towers", "SPHINX", "Mixing visual encoders beats each single encoder.",
          (Variant("mixed"), Variant("convnext only", towers=("clip_convnext",)), Variant("vit only", towers=("clip_vit",))),
          better="mixed"),
    Claim("subimages", "SPHINX", "Sub-image views (K=2) help small objects over one global view (K=1).",
          (Variant("K=1"), Variant("K=2", views_grid=2)), better="K=2", heldout="small_objects"),  # the preset's K is 1
    Claim("beta", "SPHINX", "Weight-mixing the real- and synthetic-caption LLMs beats either alone.",
          tuple(Variant(f"beta={b}", beta=b) for b in (0.0, 0.25, 0.5, 0.75, 1.0)), better="beta=0.5"),
    Claim("stage1_llm", "SPHINX", "Unfreezing the LLM in stage 1 (pre-training) helps.",
          (Variant("LLM trained in stage 1"), Variant("LLM frozen in stage 1", stage1={"trainable": ["projector"]})),
          better="LLM trained in stage 1"),
    Claim("text_stage1", "SPHINX / VILA", "Text-only data in stage 1 keeps language without costing grounding.",
          (Variant("text on in stage 1"), Variant("text off in stage 1", stage1=TEXT_OFF)), better="text on in stage 1",
          metric="stage1_text_loss", also=("text_loss", "rec_acc50", "rec_miou", "vqa_acc"), after_stage1=True),
    Claim("text_stage2", "SPHINX / VILA", "Text-only data in stage 2 keeps language without costing grounding.",
          (Variant("text on in stage 2"), Variant("text off in stage 2", stage2=TEXT_OFF)), better="text on in stage 2",
          metric="text_loss", also=("rec_acc50", "rec_miou", "vqa_acc")),
    Claim("lora", "LLaVA scaling study", "Tuning the full LLM in stage 2 beats LoRA (alpha = 2r); the study finds the gap small at 7B/13B.",
          (Variant("full LLM"), Variant("LoRA r=16", stage2={"trainable": ["projector", "llm_lora"], "lora_rank": 16})),
          better="full LLM"),
    Claim("modules", "GIT-LLM", "Training more modules in stage 2 helps: projector < + LLM LoRA < + vision.",
          (Variant("projector", stage2={"trainable": ["projector"]}),
           Variant("+ LLM LoRA", stage2={"trainable": ["projector", "llm_lora"]}),
           Variant("+ LLM LoRA + vision", stage2={"trainable": ["projector", "llm_lora", "vision"]})),
          better="+ LLM LoRA + vision"),
)


@dataclass
class ClaimsConfig:
    """The miniature budget every variant gets, and where things go."""

    out: Path
    work: Path
    claims: tuple[str, ...] = tuple(c.key for c in CLAIMS)
    seeds: tuple[int, ...] = (0, 1)
    train_images: int = 2000
    heldout_images: int = 300
    eval_limit: int = 300
    stage0_steps: int = 1500
    stage1_steps: int = 200
    stage2_steps: int = 1200
    jobs: int = 1  # seeds trained at once, each in its own process with cores / jobs threads


POLL_S = 2.0  # how often the parallel driver looks for a finished worker

BUDGET_FLAGS = ("train_images", "heldout_images", "eval_limit", "stage0_steps", "stage1_steps", "stage2_steps")


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def phase(work: Path, name: str, spec: dict[str, Any], make: Callable[[Path], Path]) -> Path:
    """The output of phase `name` made from `spec`, trained once: reused when its directory says it is complete,
    resumed (the training loop's own exact resume) when it was interrupted."""
    where = work / f"{name}-{_key(name, spec)}"
    done = where / "done.json"
    if done.exists():
        return Path(json.loads(done.read_text())["model"])
    where.mkdir(parents=True, exist_ok=True)
    (where / "spec.json").write_text(json.dumps(spec, indent=2, default=str))
    model = make(where)
    done.write_text(json.dumps({"model": str(model)}))
    return model


@dataclass(frozen=True)
class Trained:
    """What one variant's pipeline made: the merged stage-1 model and the stage-2 model trained from it."""

    stage1: Path
    stage2: Path


def train_variant(cfg: ClaimsConfig, v: Variant, seed: int, data: Path) -> Trained:
    """The models of variant `v` at seed `seed` (its phases shared with every variant that agrees so far)."""
    seeds = stage_seeds(seed)
    s0 = {"towers": v.towers, "views_grid": v.views_grid, "seed": seed, "steps": cfg.stage0_steps, "data": str(data)}
    base = phase(cfg.work, "stage0", s0, lambda d: pretrain_towers(
        TowerPretrainConfig(steps=cfg.stage0_steps, batch_size=32, init_seed=seeds["stage0"], seed=seeds["stage0"],
                            towers=v.towers, views_grid=v.views_grid), d / "model"))
    s1 = {"init": str(base), "max_steps": cfg.stage1_steps, **v.stage1}
    real = phase(cfg.work, "stage1_real", {**s1, "seed": seed}, lambda d: stage1(recipe_config(
        "tiny_stage1.yaml", data=str(data), out=str(d / "run"), captions="real", seed=seeds["stage1_real"], **s1)))
    synth = phase(cfg.work, "stage1_synthetic", {**s1, "seed": seed}, lambda d: stage1(recipe_config(
        "tiny_stage1.yaml", data=str(data), out=str(d / "run"), captions="synthetic", seed=seeds["stage1_synthetic"], **s1)))
    merged = phase(cfg.work, "merge", {"real": str(real), "synthetic": str(synth), "beta": v.beta},
                   lambda d: merge(real, synth, v.beta, d / "model"))
    s2 = {"init": str(merged), "max_steps": cfg.stage2_steps, "save_every": cfg.stage2_steps, **v.stage2}
    return Trained(merged, phase(cfg.work, "stage2", {**s2, "seed": seed}, lambda d: stage2(recipe_config(
        "tiny_stage2.yaml", data=str(data), out=str(d / "run"), seed=seeds["stage2"], **s2))))


def worlds(cfg: ClaimsConfig) -> dict[str, Path]:
    """The training world (seed 0) and the held-out worlds (seed 1; the small-object one: shapes 6–12 % of the side)."""
    root = cfg.work / "data"
    paths = {"train": root / "train", "heldout": root / "heldout", "small_objects": root / "small_objects"}
    made = {"train": (cfg.train_images, 0, None), "heldout": (cfg.heldout_images, 1, None),
            "small_objects": (cfg.heldout_images, 1, WorldConfig(min_scale=0.06, max_scale=0.12))}
    for name, (num, seed, world) in made.items():
        marker = paths[name] / "complete.json"
        if not marker.exists():
            shutil.rmtree(paths[name], ignore_errors=True)
            synthesize(paths[name], num, seed=seed, config=world)
            marker.write_text(json.dumps({"num": num, "seed": seed}))
    return paths


def score(work: Path, model: Path, heldout: Path, tasks: tuple[str, ...], limit: int) -> dict[str, float]:
    """The numeric eval report of `model` on `heldout` for `tasks` (plus the text losses); cached, so a model shared by
    several claims is evaluated once per task set."""
    cache = work / "scores" / f"{_key(str(model), str(heldout), tasks, limit)}.json"
    if not cache.exists():
        report = evaluate(generator_for(model), heldout, limit=limit, tasks=list(tasks))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}))
    return json.loads(cache.read_text())


def claim_metrics(cfg: ClaimsConfig, claim: Claim, models: Trained, heldout: Path) -> dict[str, float]:
    """The claim's metric and the ones reported beside it, in that order."""
    report = score(cfg.work, models.stage2, heldout, claim.tasks, cfg.eval_limit)
    if claim.after_stage1:
        report |= {f"stage1_{k}": x for k, x in score(cfg.work, models.stage1, heldout, (), cfg.eval_limit).items()}
    return {k: report[k] for k in (claim.metric, *claim.also) if k in report}


def trivial_baseline(heldout: Path, metric: str, limit: int) -> float | None:
    """The eval runner's trivial baseline of `metric` on the held-out set, from its ground truth alone (REC Acc@0.5:
    the best constant box); None for a metric without one (the losses)."""
    if metric != "rec_acc50":
        return None
    return M.best_constant_box(rec_targets(load_task(heldout, "rec", limit)), 0.5)[1]


NOT_DECIDED = "not decided: no variant beats the trivial baseline"


def verdict(claim: Claim, results: dict[str, list[float]], baseline: float | None = None) -> str:
    """'holds' (the claimed-better variant's worst seed beats every other's best), 'holds on the mean', or 'does not
    hold', in the metric's direction; not decided when no variant's mean beats the metric's trivial `baseline` (no
    model learned the task, so the comparison says nothing about the claim)."""
    if baseline is not None and all(statistics.fmean(xs) <= baseline for xs in results.values()):
        return NOT_DECIDED
    sign = -1.0 if claim.metric in LOWER_IS_BETTER else 1.0
    best = [sign * x for x in results[claim.better]]
    others = [[sign * x for x in xs] for name, xs in results.items() if name != claim.better]
    if all(min(best) > max(o) for o in others):
        return "holds"
    if all(statistics.fmean(best) > statistics.fmean(o) for o in others):
        return "holds on the mean"
    return "does not hold"


def budget(cfg: ClaimsConfig) -> dict[str, Any]:
    """What every variant's result depends on besides its own settings (two reports can be joined when it agrees)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k not in ("out", "work", "claims", "jobs")}


def previous(cfg: ClaimsConfig) -> dict[str, Any]:
    """The claims already in `cfg.out/claims.json` when they were measured at this budget (else none): a run of some
    claims adds to the report instead of replacing it."""
    path = cfg.out / "claims.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if old.get("budget") != budget(cfg):
        print(f"[claims] {path} was measured at another budget: its claims are not kept")
        return {}
    return old.get("claims", {})


def command_line(cfg: ClaimsConfig, claims: list[str]) -> str:
    """The command that remakes a report of `claims` (every budget flag spelled out; the work directory and the job
    count only decide where and how fast it trains)."""
    flags = " ".join(f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in BUDGET_FLAGS)
    return (f".venv/bin/python -m sphinx_vi.experiments.claims --out {cfg.out} --work {cfg.work} --seeds "
            f"{' '.join(map(str, cfg.seeds))} --jobs {cfg.jobs} --claims {','.join(claims)} {flags}")


def chosen_claims(keys: tuple[str, ...]) -> list[Claim]:
    """The claims named by `keys`, in that order."""
    by_key = {c.key: c for c in CLAIMS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; known: {', '.join(by_key)}")
    return [by_key[k] for k in keys]


def run(cfg: ClaimsConfig) -> dict[str, Any]:
    chosen = chosen_claims(cfg.claims)
    paths = worlds(cfg)
    if cfg.jobs > 1 and len(cfg.seeds) > 1:
        train_seeds_in_parallel(cfg)  # every phase and score is then cached: the pass below only reads them
    out: dict[str, Any] = {"budget": budget(cfg), "command": "", "claims": previous(cfg)}
    cfg.out.mkdir(parents=True, exist_ok=True)
    for claim in chosen:
        rows: dict[str, dict[str, list[float]]] = {}
        for v in claim.variants:
            for seed in cfg.seeds:
                models = train_variant(cfg, v, seed, paths["train"])
                for k, x in claim_metrics(cfg, claim, models, paths[claim.heldout]).items():
                    rows.setdefault(v.name, {}).setdefault(k, []).append(x)
                print(f"[claims] {claim.key} / {v.name} / seed {seed}: {claim.metric} {rows[v.name][claim.metric][-1]:.3f}", flush=True)
        out["claims"][claim.key] = {"source": claim.source, "says": claim.says, "metric": claim.metric, "better": claim.better,
                                    "heldout": claim.heldout,
                                    "variants": {name: {k: {**spread(xs), "seeds": xs} for k, xs in r.items()} for name, r in rows.items()}}
        judge(out["claims"], cfg, paths)
        out["command"] = command_line(cfg, list(out["claims"]))  # a joined report names the claims it kept too
        plot_claim(claim, rows, cfg.out / f"claim_{claim.key}.png")
        (cfg.out / "claims.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))  # after every claim: partial results kept
    (cfg.out / "claims.md").write_text(claims_markdown(out), encoding="utf-8")
    return out


def judge(claims: dict[str, Any], cfg: ClaimsConfig, paths: dict[str, Path]) -> None:
    """Each reported claim's trivial baseline and verdict, from its stored seeds (claims kept from an earlier run too)."""
    by_key = {c.key: c for c in CLAIMS}
    for key, c in claims.items():
        claim = by_key.get(key)
        if claim is None:  # a claim this version no longer has: its stored verdict stands
            continue
        c["baseline"] = trivial_baseline(paths[claim.heldout], claim.metric, cfg.eval_limit)
        c["verdict"] = verdict(claim, {name: v[claim.metric]["seeds"] for name, v in c["variants"].items()}, c["baseline"])


def train_seeds_in_parallel(cfg: ClaimsConfig) -> None:
    """Train and score every seed's variants in `cfg.jobs` worker processes at once (this process's command with one
    seed each, the cores split between them); the phases they share are distinct per seed, so nothing collides."""
    import os
    import subprocess

    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    base = [sys.executable, "-m", "sphinx_vi.experiments.claims", "--work", str(cfg.work), "--claims", ",".join(cfg.claims),
            "--jobs", "1", *(f"--{k.replace('_', '-')}={getattr(cfg, k)}" for k in BUDGET_FLAGS)]
    pending = list(cfg.seeds)
    running: dict[int, tuple[subprocess.Popen, Any]] = {}
    failed = []
    while pending or running:
        while pending and len(running) < cfg.jobs:
            seed = pending.pop(0)
            log = (cfg.work / f"seed-{seed}.log").open("a")
            cmd = [*base, "--seeds", str(seed), "--out", str(cfg.work / "per_seed" / f"seed-{seed}")]
            print(f"[claims] seed {seed}: {' '.join(cmd[1:])} (log {log.name})", flush=True)
            running[seed] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(POLL_S)
        for seed, (proc, log) in list(running.items()):  # whichever worker ends first frees its slot
            if proc.poll() is not None:
                log.close()
                del running[seed]
                if proc.returncode != 0:
                    failed.append(seed)
    if failed:
        raise RuntimeError(f"seed(s) {failed} failed; see {cfg.work}/seed-*.log (a rerun resumes where they stopped)")


def plot_claim(claim: Claim, rows: dict[str, dict[str, list[float]]], path: Path) -> None:
    """The claim's metric per variant: the mean as a bar, every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.2))
    for i, name in enumerate(names):
        xs = rows[name][claim.metric]
        ax.bar(i, statistics.fmean(xs), color="#4c72b0" if name == claim.better else "#a0a0a0", width=0.6)
        ax.scatter([i] * len(xs), xs, color="black", s=14, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel(claim.metric)
    ax.set_title(f"{claim.source}: {claim.key}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def claims_markdown(out: dict[str, Any]) -> str:
    b = out["budget"]
    lines = ["# The seeds' claims, measured in miniature", "",
             f"Made by `{out['command']}` "
             f"on a 2-core CPU (fp32). Budget per variant: stage 0 {b['stage0_steps']} steps, stage 1 {b['stage1_steps']}, stage 2 "
             f"{b['stage2_steps']}, on {b['train_images']} training images; {b['eval_limit']} held-out samples per task; seeds "
             f"{', '.join(map(str, b['seeds']))}. Mean [min, max] over the seeds.", "",
             "| claim | the seed says | we measured | verdict |", "| --- | --- | --- | --- |"]
    for key, c in out["claims"].items():
        measured = "; ".join(f"{name} {v[c['metric']]['mean']:.3f}" for name, v in c["variants"].items())
        lines.append(f"| {key} ({c['source']}) | {c['says']} | {c['metric']}: {measured} | {c['verdict']} |")
    for key, c in out["claims"].items():
        metrics = list(next(iter(c["variants"].values())))
        floor = f" (trivial baseline {c['baseline']:.3f})" if c.get("baseline") is not None else ""
        lines += ["", f"## {key}: {c['says']}", "", f"Held-out set: {c['heldout']}; decided on {c['metric']}{floor}.", "",
                  "| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for name, v in c["variants"].items():
            cells = [f"{v[m]['mean']:.3f} [{v[m]['min']:.3f}, {v[m]['max']:.3f}]" for m in metrics]
            lines.append(f"| {name}{' (claimed best)' if name == c['better'] else ''} | " + " | ".join(cells) + " |")
        lines += ["", f"![{key}](claim_{key}.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.experiments.claims", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="claims.json, claims.md, one plot per claim")
    p.add_argument("--work", type=Path, required=True, help="worlds and every phase's runs (kept: reruns resume and reuse)")
    p.add_argument("--claims", default=",".join(c.key for c in CLAIMS), help="comma-separated claim keys")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    for name in BUDGET_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(ClaimsConfig, name))
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once (each in its own process, the cores split)")
    args = p.parse_args(argv)
    cfg = ClaimsConfig(args.out, args.work, tuple(args.claims.split(",")), tuple(args.seeds),
                       **{name: getattr(args, name) for name in BUDGET_FLAGS}, jobs=args.jobs)
    try:
        run(cfg)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
