"""One GPU, the real shapes: `python -m sphinx_vi.bench.gpu --out FILE.json` (≤ 10 minutes on one large GPU).

The parity pair (`bench.parity`: transformers' LLaVA and sphinx_vi holding the same weights) at
sphinx-vi-1k's language-model shapes (Vistral-7B: 32 layers, width 4096, 38,370 words) with a
K=2 view set's visual tokens per image (1,444 ≈ 1,455), random weights, bf16, SDPA attention.
For each engine: a stage-2 training step (full LLM, then LoRA r=16 on every linear of the LLM;
AdamW) as tokens/s and MFU against the bf16 matmul peak measured in the same run, the peak
memory, and greedy generate tokens/s at batch 1. `--size tiny` runs the same code on the CPU
in seconds (tested).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import command_parser, write_json
from .memory import PeakRSS
from .parity import SIZES, ParitySize

REAL = ParitySize("sphinx-vi-1k", hidden=4096, layers=32, heads=32, kv_heads=8, vision_hidden=1024, vision_layers=24,
                  image_size=532, vocab=38370)  # 38 × 38 = 1,444 visual tokens per image
NEW_TOKENS = 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """TFLOP/s of an n×n matmul on `device`: the peak the MFU is measured against."""
    n = n if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def _batch(size: ParitySize, batch: int, text: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A stage-2-like batch: one image per row (its visual tokens first), `text` tokens after, labels on the answer half."""
    from .parity import IMAGE_TOKEN_ID

    visual = (size.image_size // size.patch_size) ** 2
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, size.vocab, (batch, 1 + visual + text), generator=g)
    ids[:, 1 : 1 + visual] = IMAGE_TOKEN_ID
    labels = ids.clone()
    labels[:, : 1 + visual + text // 2] = -100
    views = torch.rand(batch, 1, 3, size.image_size, size.image_size, generator=g)
    return {"input_ids": ids.to(device), "labels": labels.to(device), "views": views.to(device)}


def _inputs(engine: str, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from .parity import normalise

    views = batch["views"].to(dtype)
    pixel_values = normalise(views.float()).to(dtype) if engine == "hf" else views
    return {"input_ids": batch["input_ids"], "pixel_values": pixel_values, "labels": batch["labels"]}


def _lora(model: Any, engine: str) -> None:
    """LoRA r=16 (α 32) on every linear of the language model, injected in place (the same on both engines)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    inject_adapter_in_model(config, model.model.language_model if engine == "hf" else model.language_model)


def _trainable(model: Any, engine: str, mode: str) -> list[torch.nn.Parameter]:
    model.requires_grad_(mode == "full")
    tower = model.model.vision_tower if engine == "hf" else model.vision.encoders["clip_vit"]
    tower.requires_grad_(False)
    if mode == "lora":
        _lora(model, engine)
    projector = model.model.multi_modal_projector if engine == "hf" else model.vision
    for name, p in projector.named_parameters():
        if engine == "hf" or not name.startswith("encoders."):
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def train(model: Any, engine: str, mode: str, batch: dict[str, torch.Tensor], dtype: torch.dtype, steps: int,
          device: torch.device, peak_tflops: float) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    opt = torch.optim.AdamW(_trainable(model, engine, mode), lr=1e-5)
    inputs = _inputs(engine, batch, dtype)

    def step() -> None:
        model(**inputs).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss:
        for _ in range(steps):
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak / 2**20
    flops = counter.get_total_flops()
    return {"step_s": seconds, "tokens_per_s": batch["input_ids"].numel() / seconds, "flops_per_step": flops,
            "mfu": flops / seconds / 1e12 / peak_tflops, "peak_memory_mb": peak_mb}


@torch.inference_mode()
def decode(model: Any, engine: str, batch: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> float:
    """Greedy new tokens per second at batch 1 (prefill excluded: two lengths, the difference)."""
    model.eval()
    inputs = _inputs(engine, {k: v[:1] for k, v in batch.items()}, dtype)
    inputs.pop("labels")
    kw = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    timings = {}
    for n in (1, NEW_TOKENS):
        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **kw)
        _sync(device)
        t = time.perf_counter()
        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **kw)
        _sync(device)
        timings[n] = time.perf_counter() - t
    return (NEW_TOKENS - 1) / max(timings[NEW_TOKENS] - timings[1], 1e-9)


def run(size: ParitySize, device: torch.device, dtype: torch.dtype, batch_size: int, text: int, steps: int) -> dict[str, Any]:
    from .parity import build_pair

    peak = matmul_peak(device, dtype)
    batch = _batch(size, batch_size, text, device)
    rows = []
    for mode in ("full", "lora"):
        for engine in ("ours", "hf"):
            with torch.device(device):
                hf, gen = build_pair(size)
            model: Any = hf if engine == "hf" else gen.model
            model = model.to(device=device, dtype=dtype)
            del hf, gen
            row = {"engine": engine, "mode": mode, **train(model, engine, mode, batch, dtype, steps, device, peak)}
            if mode == "full":
                row["decode_tokens_per_s"] = decode(model, engine, batch, dtype, device)
            rows.append(row)
            print(f"[gpu bench] {engine} {mode}: {row['tokens_per_s']:.0f} tokens/s, MFU {row['mfu']:.1%}, "
                  f"peak {row['peak_memory_mb']:.0f} MB", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    by = {(r["engine"], r["mode"]): r for r in rows}
    return {"size": size.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).removeprefix("torch."), "batch": batch_size, "tokens_per_row": int(batch["input_ids"].shape[1]),
            "matmul_peak_tflops": peak, "rows": rows,
            "ratios": {"train_full_vs_hf": by["ours", "full"]["tokens_per_s"] / by["hf", "full"]["tokens_per_s"],
                       "train_lora_vs_hf": by["ours", "lora"]["tokens_per_s"] / by["hf", "lora"]["tokens_per_s"],
                       "decode_vs_hf": by["ours", "full"]["decode_tokens_per_s"] / by["hf", "full"]["decode_tokens_per_s"]}}


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{r['size']} on {r['device']}, {r['dtype']}, batch {r['batch']} × {r['tokens_per_row']} tokens; "
             f"matmul peak {r['matmul_peak_tflops']:.1f} TFLOP/s",
             f"{'engine':<7}{'mode':<6}{'step s':>9}{'tokens/s':>10}{'MFU':>7}{'peak MB':>10}{'decode tok/s':>14}"]
    for row in r["rows"]:
        dec = f"{row['decode_tokens_per_s']:>14.1f}" if "decode_tokens_per_s" in row else ""
        lines.append(f"{row['engine']:<7}{row['mode']:<6}{row['step_s']:>9.3f}{row['tokens_per_s']:>10.0f}{row['mfu']:>7.1%}"
                     f"{row['peak_memory_mb']:>10.0f}{dec}")
    lines.append(", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.gpu", __doc__)
    p.add_argument("--size", default="real", choices=["real", "tiny"])
    p.add_argument("--batch", type=int, default=None, help="rows per step (default: 4 real, 2 tiny)")
    p.add_argument("--text", type=int, default=512, help="text tokens per row after the visual tokens")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.size == "real" and device.type != "cuda":
        print("error: the real shapes need a GPU (run --size tiny on the CPU)", file=sys.stderr)
        return 2
    size = REAL if args.size == "real" else SIZES["tiny"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = run(size, device, dtype, args.batch or (4 if args.size == "real" else 2), args.text, args.steps)
    print(format_table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
