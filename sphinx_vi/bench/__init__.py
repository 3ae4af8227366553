"""Benchmarks: timing scripts that print a table and write JSON (never timed tests)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, standard deviation) of `repeats` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), statistics.pstdev(times)


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """Write a benchmark result (if a path was given) and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its module docstring, kept as written, as the help text."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: CPU model (timings move between hosts of one cloud type), cores, the
    torch threads used, and whether the CPU computes bf16 in hardware."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return {"cpu": model, "arch": platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "avx512_bf16": bool(avx512_bf16), "amx": bool(amx), "torch": torch.__version__}
