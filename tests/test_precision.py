"""bf16 training on the CPU tracks fp32; the precision and GPU benchmarks run at tiny size here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sphinx_vi.bench import gpu, precision
from sphinx_vi.train.loop import resolve_precision
from sphinx_vi.train.metrics import read_metrics

STEPS = 100  # bf16 is emulated on a host without native bf16 (AVX2 only): 78 s in the suite there
WINDOW = 25
TOLERANCE = 0.05  # bf16 autocast: the mean loss of each 25-step window within 5 % of fp32's


@pytest.fixture(scope="module")
def world(train_world):
    return train_world


def _run(world, out, precision_name):
    """A stage-2 run in its own process, as users start one (accelerate's state is one per process)."""
    cmd = [sys.executable, "-m", "sphinx_vi.train", "stage2", "--model", "tiny", "--data", str(world), "--out", str(out),
           "--batch-size", "4", "--text-batch-size", "2", "--max-steps", str(STEPS), "--warmup-steps", "10", "--log-every", "1",
           "--save-every", "10000", "--lr", "0.001", "--reference-batch", "4", "--max-length", "1024",
           "--mixture", "rec=2,detection=1,text=1", "--precision", precision_name, "--seed", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"precision {resolve_precision(precision_name)}" in proc.stdout
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl")]


def test_bf16_training_tracks_fp32_over_100_steps(world, tmp_path):
    fp32 = _run(world, tmp_path / "fp32", "fp32")
    bf16 = _run(world, tmp_path / "bf16", "bf16")
    assert len(fp32) == len(bf16) == STEPS
    assert fp32[-1] < 0.6 * fp32[0] and bf16[-1] < 0.6 * bf16[0]  # both learn
    for start in range(0, STEPS, WINDOW):
        a, b = sum(fp32[start : start + WINDOW]) / WINDOW, sum(bf16[start : start + WINDOW]) / WINDOW
        assert abs(a - b) <= TOLERANCE * a, (start, a, b)
    assert fp32 != bf16  # bf16 did run: the losses are not bit-identical


def test_precision_is_resolved_per_device():
    assert resolve_precision("fp32") == "no"
    assert resolve_precision("bf16") == "bf16"
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == "no"  # measured: see README, Performance
        with pytest.raises(ValueError, match="fp16 needs a GPU"):
            resolve_precision("fp16")


def test_the_precision_benchmark_reports_mfu_against_the_measured_peak(tmp_path):
    peak = precision.matmul_peak()
    assert peak["fp32"] > 0 and peak["bf16"] > 0
    row = precision.worker("tiny", "ours", "bf16", iters=1)
    assert row["flops_per_step"] > 0 and row["step_s"] > 0 and row["achieved_gflops"] > 0


def test_the_gpu_benchmark_runs_at_tiny_size_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--size", "tiny", "--steps", "1", "--text", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {(r["engine"], r["mode"]) for r in result["rows"]} == {(e, m) for e in ("ours", "hf") for m in ("full", "lora")}
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in result["rows"])
    assert set(result["ratios"]) == {"train_full_vs_hf", "train_lora_vs_hf", "decode_vs_hf"}
    assert gpu.main(["--size", "real"]) == 2 or torch.cuda.is_available()  # the real shapes refuse the CPU


def test_the_projection_adds_up_its_components_at_small_shapes():
    from sphinx_vi.bench.projection import Shapes, project

    shapes = Shapes(layers=2, width=64, mlp=128, heads=4, kv_heads=2, vocab=500, visual=40, text=20, answer=5, vit_width=64, vit_tokens=16)
    r = project("fp32", reps=1, tower_flops=1e6, shapes=shapes)
    for side in ("ours", "hf"):
        assert sum(r[side]["shares"].values()) == pytest.approx(1.0)
    assert r["head_all_positions"]["flops"] > r["head_label_positions"]["flops"]  # every position vs the answer's
    assert r["projected_ratio_vs_hf"] == pytest.approx(r["hf"]["step_s"] / r["ours"]["step_s"])
