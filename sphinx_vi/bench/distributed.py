"""Distributed engines on 2 CPU processes against one process at the same global batch.

    python -m sphinx_vi.bench.distributed --out reports/perf/distributed_cpu.json

For DDP (torchrun), FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3 (the GPU launch configs in train/accelerate/,
unchanged but for `--num_processes`): the largest relative difference of the logged losses and of the
guided-attention term, the largest absolute difference of the final weights, the same after resuming
from step 2's sharded checkpoint, and the consolidated checkpoint against the run's own final model.
A 4-step stage-2 run of the `tiny` preset with box-guided attention on, each step's global batch of 8
in two accumulated micro-batches (so the engines' accumulation boundaries are exercised: DDP's and
FSDP2's skipped reductions, DeepSpeed's boundary step). The tests assert the same comparisons
(tests/test_train.py); this script records the figures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..train.metrics import read_metrics
from . import command_parser, write_json

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "train" / "accelerate"
STEPS = 4
ACCUMULATE = 2  # micro-batches per optimizer step


@dataclass(frozen=True)
class Engine:
    name: str
    config: str | None  # accelerate launch config; None: torchrun (DDP)
    port: int
    reported: str  # the distributed type the run prints
    shard_files: str | None  # glob of one checkpoint's per-process shard files


ENGINES = [
    Engine("DDP", None, 29533, "MULTI_CPU", None),
    Engine("FSDP2", "fsdp_8gpu.yaml", 29537, "FSDP", "pytorch_model_fsdp_0/__*_0.distcp"),
    Engine("ZeRO-2", "deepspeed_zero2.yaml", 29538, "DEEPSPEED", "pytorch_model/zero_pp_rank_*_mp_rank_00_optim_states.pt"),
    Engine("ZeRO-3", "deepspeed_zero3.yaml", 29539, "DEEPSPEED", "pytorch_model/zero_pp_rank_*_mp_rank_00_model_states.pt"),
]


def stage2_args(world: Path, seed: int = 5) -> list[str]:
    """A stage-2 run with box-guided attention on: its loss is normalised by the global count of guided terms too."""
    return ["-m", "sphinx_vi.train", "stage2", "--model", "tiny", "--data", str(world), "--max-steps", str(STEPS),
            "--warmup-steps", "1", "--log-every", "1", "--lr", "0.001", "--reference-batch", "8",
            "--mixture", "rec=1,detection=1", "--seed", str(seed), "--guides.box.weight", "0.5", "--guides.box.layers=-1",
            "--precision", "fp32", "--grad-accum", str(ACCUMULATE)]


def per_process_batch(n: int) -> list[str]:
    """Both per-process batch sizes (the task mixture and the plain-paragraph stream), so that N processes of
    `n` make the same global batch as one process of N·n."""
    return ["--batch-size", str(n), "--text-batch-size", str(n)]


def run(cmd: list[str], out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} … failed:\n{proc.stderr[-3000:]}")
    return proc


def one_process(world: Path, out: Path) -> subprocess.CompletedProcess:
    """The reference: one process, micro-batches of 4 (global batch 8)."""
    return run([sys.executable, *stage2_args(world), *per_process_batch(4), "--save-every", "100"], out)


def launch_command(engine: Engine, world: Path) -> list[str]:
    """Two processes of 2 samples per micro-batch each (global batch 8), a checkpoint after every step."""
    if engine.config is None:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(engine.port)]
    else:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / engine.config),
                "--num_processes", "2", "--main_process_port", str(engine.port)]
    return [*head, *stage2_args(world), *per_process_batch(2), "--save-every", "1", "--keep-checkpoints", str(STEPS)]


def interrupted_after(run_dir: Path, step: int, copy: Path) -> Path:
    """`run_dir` as an interruption right after step `step`'s checkpoint would have left it."""
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "final")
    for later in sorted((copy / "checkpoints").glob("step-*"))[step:]:
        shutil.rmtree(later)
    return copy


def final_weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise ValueError(f"different tensors: {sorted(a.keys() ^ b.keys())[:3]}")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def run_diff(a: Path, b: Path) -> dict[str, float]:
    """Largest relative loss / guided-term difference per logged step and largest weight difference."""
    ra, rb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    if [r["step"] for r in ra] != [r["step"] for r in rb]:
        raise ValueError(f"logged steps differ: {[r['step'] for r in ra]} vs {[r['step'] for r in rb]}")

    def rel(key: str) -> float:
        return max(abs(x[key] - y[key]) / max(abs(x[key]), 1e-12) for x, y in zip(ra, rb, strict=True))

    return {"loss_rel": rel("loss"), "box_attention_rel": rel("box_attention"),
            "weights_abs": weight_diff(final_weights(a / "final"), final_weights(b / "final"))}


def consolidate(step_dir: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "sphinx_vi.train", "consolidate", str(step_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"consolidate {step_dir} failed:\n{proc.stderr[-2000:]}")
    return out


def measure(engine: Engine, world: Path, reference: Path, work: Path) -> dict[str, Any]:
    cmd = launch_command(engine, world)
    t = time.perf_counter()
    proc = run(cmd, work / "straight")
    row: dict[str, Any] = {"engine": engine.name, "wall_s": round(time.perf_counter() - t, 1),
                           "reported": f"2 process(es), {engine.reported}" in proc.stdout,
                           **run_diff(reference, work / "straight")}
    if engine.shard_files is not None:
        row["shards_per_checkpoint"] = len(list((work / "straight" / "checkpoints" / "step-0000002").glob(engine.shard_files)))
        resumed = interrupted_after(work / "straight", 2, work / "resumed")
        run(cmd, resumed)
        row["resume"] = run_diff(work / "straight", resumed)
        cons = consolidate(work / "straight" / "checkpoints" / f"step-{STEPS:07d}", work / "consolidated")
        row["consolidated_abs"] = weight_diff(final_weights(work / "straight" / "final"), final_weights(cons))
    return row


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.distributed", __doc__)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    p.add_argument("--engines", default=",".join(e.name for e in ENGINES))
    args = p.parse_args(argv)
    from ..data.world.generate import synthesize
    from ..data.world.shapes import WorldConfig

    chosen = [e for e in ENGINES if e.name in args.engines.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root / "world", 40, seed=0, config=WorldConfig(size=64), progress=False)
        one_process(root / "world", root / "one")
        rows = []
        for engine in chosen:
            (root / engine.name).mkdir()
            rows.append(measure(engine, root / "world", root / "one", root / engine.name))
            r = rows[-1]
            extra = (f" resume loss {r['resume']['loss_rel']:.1e} weights {r['resume']['weights_abs']:.1e};"
                     f" consolidated {r['consolidated_abs']:.1e}") if "resume" in r else ""
            print(f"{r['engine']:7s} loss {r['loss_rel']:.1e}  box term {r['box_attention_rel']:.1e}  "
                  f"weights {r['weights_abs']:.1e};{extra}  {r['wall_s']} s")
    write_json(args.out, {"steps": STEPS, "processes": 2, "global_batch": 8, "micro_batches": ACCUMULATE,
                          "torch": torch.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
