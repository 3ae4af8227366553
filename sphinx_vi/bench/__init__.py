"""Benchmarks: timing scripts that print a table and write JSON (never timed tests)."""

from __future__ import annotations

import argparse
import json
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
