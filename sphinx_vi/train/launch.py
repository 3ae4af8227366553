"""Run a training stage from Python, in this process or data-parallel over several processes on this machine.

    run_stage(load_config("train/configs/tiny_stage2.yaml", {...}), processes=2)

With `processes` > 1 the stage is launched through torchrun (`python -m torch.distributed.run`) as the
train CLI would be, each process a DDP rank (gloo on the CPU) with `cores // processes` threads. The
config's batch sizes are global: each process gets its share, so the global batch, the learning rate
and the data order are the config's (the loop's data order does not depend on the world size) and the
run trains the model one process would, up to floating-point reduction order (tests/test_train_launch.py).
On a small model several one-thread processes use a CPU's cores better than one process with them all.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

from .config import TrainConfig, save_config

LAUNCH_CONFIG = "launch.yaml"  # the per-process config the launched ranks read, kept in the run's directory


class LaunchError(RuntimeError):
    """A launched stage failed (its ranks' output is above the error)."""


def per_process(cfg: TrainConfig, processes: int) -> TrainConfig:
    """`cfg` with its global batch sizes split over `processes` ranks (refused when they do not divide)."""
    shares = {"batch_size": cfg.batch_size, "text_batch_size": cfg.text_batch_size}
    uneven = {k: v for k, v in shares.items() if v % processes}
    if uneven:
        raise ValueError(f"{processes} processes cannot share {', '.join(f'{k} {v}' for k, v in uneven.items())} "
                         "evenly; choose batch sizes the process count divides")
    return dataclasses.replace(cfg, batch_size=cfg.batch_size // processes,
                               text_batch_size=cfg.text_batch_size // processes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_stage(cfg: TrainConfig, processes: int = 1) -> Path:
    """Train stage `cfg.stage` per `cfg` (batch sizes global); returns the final model's directory."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        from .recipes import stage1, stage2

        return (stage1 if cfg.stage == "stage1" else stage2)(cfg)
    out = Path(cfg.out)
    launch = out / LAUNCH_CONFIG
    save_config(per_process(cfg, processes), launch)
    threads = str(max(1, (os.cpu_count() or processes) // processes))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "sphinx_vi.train", cfg.stage, "--config", str(launch)]
    print(f"[{cfg.stage}] {processes} processes × {threads} thread(s): {' '.join(cmd[1:])}", flush=True)
    code = subprocess.run(cmd, env=env).returncode
    if code != 0:
        raise LaunchError(f"[{cfg.stage}] the {processes}-process run exited with {code}; "
                          f"its config: {launch} (a rerun resumes from its last checkpoint)")
    return out / "final"
