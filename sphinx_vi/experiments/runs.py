"""Several learning runs as one figure: the mean and range of every metric, against its baseline and target.

    python -m sphinx_vi.experiments.runs RUN_A/eval.json RUN_B/eval.json --out reports/learning/runs

One run is not a figure (runs of different seeds spread by about ±0.05 on this CPU), so the learning
targets are judged on the runs' mean and on their worst run. Writes runs.json, runs.md and runs.png under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple

from ..eval.runner import ROWS


class Target(NamedTuple):
    key: str
    bound: float
    at_least: bool  # True: the metric must reach `bound`; False: stay at or under it


TARGETS = (Target("rec_acc50", 0.8, True), Target("det_f1_50", 0.85, True), Target("vqa_acc", 0.75, True),
           Target("pose_oks_ap", 0.6, True), Target("text_loss_vs_stage1", 1.5, False),
           Target("main_pipeline_minutes", 60.0, False))
EXTRA_ROWS = (("paragraph loss, after stage 2 / merged stage 1", "text_loss_vs_stage1"),
              ("main pipeline minutes", "main_pipeline_minutes"))


def spread(values: list[float]) -> dict[str, float]:
    """Mean, min, max and count of `values` (the one summary of runs and of seeds)."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def meets(target: Target, value: float) -> bool:
    return value >= target.bound if target.at_least else value <= target.bound


def summarize(reports: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per metric: every run's value, their spread, the baseline's mean, and the target met on the mean / by every run."""
    targets = {t.key: t for t in TARGETS}
    rows = [(label, key, base) for label, key, base, _ in ROWS] + [(label, key, None) for label, key in EXTRA_ROWS]
    out: dict[str, Any] = {"runs": names, "metrics": {}}
    for label, key, base in rows:
        values = [float(r[key]) for r in reports if key in r]
        if len(values) != len(reports):
            continue  # a metric not every run has is not summarised
        row: dict[str, Any] = {"label": label, "values": values, **spread(values)}
        if base and all(base in r for r in reports):
            bases = [float(r[base]) for r in reports]
            row["baseline"] = statistics.fmean(bases)
            row["above_baseline_every_run"] = all(v > b for v, b in zip(values, bases))
        if key in targets:
            t = targets[key]
            row["target"] = f"{'≥' if t.at_least else '≤'} {t.bound:g}"
            row["bound"] = t.bound
            row["met_on_mean"] = meets(t, row["mean"])
            row["met_by_every_run"] = all(meets(t, v) for v in values)
        out["metrics"][key] = row
    return out


def markdown(summary: dict[str, Any], command: str) -> str:
    lines = ["# Learning runs: mean and range", "", f"Made by `{command}`; runs: " + ", ".join(f"`{n}`" for n in summary["runs"]) + ".",
             "", "| metric | mean | range | runs | baseline | every run above it | target | met (mean / every run) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in summary["metrics"].values():
        met = ""
        if "target" in row:
            met = f"{'yes' if row['met_on_mean'] else 'no'} / {'yes' if row['met_by_every_run'] else 'no'}"
        base = f"{row['baseline']:.3f}" if "baseline" in row else ""
        above = ("yes" if row["above_baseline_every_run"] else "**no**") if "baseline" in row else ""
        lines.append(f"| {row['label']} | {row['mean']:.3f} | {row['min']:.3f} – {row['max']:.3f} | "
                     + ", ".join(f"{v:.3f}" for v in row["values"]) + f" | {base} | {above} | {row.get('target', '')} | {met} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> None:
    """Each scored task's mean (bar), its runs' range (whisker), its baseline (grey tick) and its target (red tick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = {key for _, key in EXTRA_ROWS}  # minutes and loss ratios have scales of their own
    rows = [r for key, r in summary["metrics"].items() if key not in extra and ("baseline" in r or "target" in r)]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh(ys, [r["mean"] for r in rows], color="tab:blue", alpha=0.75, label=f"mean of {len(summary['runs'])} runs")
    ax.errorbar([r["mean"] for r in rows], ys, xerr=[[r["mean"] - r["min"] for r in rows], [r["max"] - r["mean"] for r in rows]],
                fmt="none", ecolor="black", capsize=3, label="range")
    for y, r in zip(ys, rows):
        if "baseline" in r:
            ax.plot([r["baseline"]] * 2, [y - 0.4, y + 0.4], color="grey", linewidth=3)
        if "target" in r:
            ax.plot([r["bound"]] * 2, [y - 0.4, y + 0.4], color="red", linewidth=3)
    ax.plot([], [], color="grey", linewidth=3, label="trivial baseline")
    ax.plot([], [], color="red", linewidth=3, label="target")
    ax.set_yticks(list(ys), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("held-out scores of the learning runs")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.experiments.runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", type=Path, nargs="+", help="each run's eval.json")
    p.add_argument("--out", type=Path, required=True, help="runs.json, runs.md and runs.png")
    args = p.parse_args(argv)
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: {path}: not a readable eval.json ({err})", file=sys.stderr)
            return 2
    summary = summarize(reports, [str(path) for path in args.reports])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    command = "python -m sphinx_vi.experiments.runs " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "runs.md").write_text(markdown(summary, command) + "\n![mean and range of each score](runs.png)\n", encoding="utf-8")
    plot(summary, args.out / "runs.png")
    print(markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
