"""What stage 2's plain-paragraph stream costs per step: `python -m sphinx_vi.bench.text_stream --out FILE.json`.

Runs `train/configs/tiny_stage2.yaml` from `--model` for `--steps` steps on a synthetic world once per
`--text-batch-sizes` value (0: the stream off, `text_loss_weight: 0`), everything else the recipe's, and
reports the steady-state seconds per step (from step `--skip` on, so start-up and the first steps'
allocations are left out) and its ratio to the stream-off run. Run it on an idle machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import command_parser, machine, write_json

CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_stage2.yaml"


def seconds_per_step(metrics: Path, skip: int) -> float:
    """Mean wall seconds per step between the logged step `skip` and the last logged step."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "elapsed_s" in r]
    first = next(r for r in rows if r["step"] >= skip)
    last = rows[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def measure(model: str, data: Path, work: Path, text_batch: int, steps: int, skip: int) -> dict[str, Any]:
    from ..train.config import load_config
    from ..train.recipes import stage2

    overrides: dict[str, Any] = {"data": str(data), "out": str(work / f"text_{text_batch}"), "init": model,
                                 "max_steps": steps, "save_every": steps, "log_every": 10}
    overrides.update({"text_batch_size": text_batch} if text_batch else {"text_loss_weight": 0.0})
    cfg = load_config(CONFIG, overrides)
    stage2(cfg)
    s = seconds_per_step(Path(cfg.out) / "metrics.jsonl", skip)
    return {"text_batch_size": text_batch, "batch_size": cfg.batch_size, "seconds_per_step": s}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'paragraphs/step':>16}{'s/step':>9}{'vs off':>8}"]
    for r in rows:
        lines.append(f"{r['text_batch_size']:>16}{r['seconds_per_step']:>9.3f}{r['vs_off']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.text_stream", __doc__)
    p.add_argument("--model", default="tiny-shapes", help="the stage-2 init: an embedded name or a checkpoint directory")
    p.add_argument("--images", type=int, default=200, help="training world size")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--text-batch-sizes", type=int, nargs="+", default=[0, 2, 4, 8])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from ..data.world.generate import synthesize
    from ..factory import EMBEDDED_MODELS

    model = str(EMBEDDED_MODELS.get(args.model, args.model))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "world"
        synthesize(data, args.images, seed=0, progress=False)
        rows = [measure(model, data, Path(tmp), b, args.steps, args.skip) for b in args.text_batch_sizes]
    off = next((r["seconds_per_step"] for r in rows if r["text_batch_size"] == 0), rows[0]["seconds_per_step"])
    for r in rows:
        r["vs_off"] = r["seconds_per_step"] / off
    print(format_table(rows))
    write_json(args.out, {"command": "python -m sphinx_vi.bench.text_stream " + " ".join(argv if argv is not None else sys.argv[1:]),
                          "machine": machine(),
                          "steps": args.steps, "skip": args.skip, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
