"""The real sphinx-vi-1k stage-2 step, projected for both engines from components timed here at real width:
`python -m sphinx_vi.bench.projection --out FILE.json`.

Timed on this machine (2 threads, fp32 and bf16 autocast, median of `--reps`): one Vistral decoder
layer (width 4096, MLP 14,336, 32 heads / 8 KV heads) forward + backward over a stage-2 sample's
sequence; the 38,370-word projection with its loss over every position (transformers' causal-LM
loss) and over the answer positions only (ours); one CLIP ViT-L layer forward over a view's
tokens, whose FLOP rate converts the frozen towers' FLOPs (`bench.plan`, counted on the model)
into time. A step of one sample is then: towers + 32 decoder layers + the projection, each share
stated. Packing is left out (at 1,455 visual tokens a sample, a padded batch of the synthetic
stage-2 mix wastes little), so the projected ratio is what skipping unlabelled logits is worth.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import command_parser, median_seconds, write_json


@dataclass(frozen=True)
class Shapes:
    """sphinx-vi-1k's decoder and a stage-2 sample (visual tokens of a K=2 view set, text, answer: bench.plan's)."""

    layers: int = 32
    width: int = 4096
    mlp: int = 14336
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 38370
    visual: int = 1455
    text: int = 200
    answer: int = 60
    vit_width: int = 1024
    vit_tokens: int = 289  # per view; 5 views


def _time(fn: Any, reps: int) -> float:
    return median_seconds(fn, reps, warmup=1)[0]


def _flops(fn: Any) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def decoder_layer(shapes: Shapes, length: int, autocast: Any, reps: int) -> dict[str, float]:
    from transformers import MistralConfig
    from transformers.models.mistral.modeling_mistral import MistralDecoderLayer, MistralRotaryEmbedding

    config = MistralConfig(hidden_size=shapes.width, intermediate_size=shapes.mlp, num_attention_heads=shapes.heads,
                           num_key_value_heads=shapes.kv_heads, vocab_size=shapes.vocab, max_position_embeddings=4096, sliding_window=None)
    config._attn_implementation = "sdpa"
    layer, rope = MistralDecoderLayer(config, 0), MistralRotaryEmbedding(config)
    hidden = torch.randn(1, length, shapes.width, requires_grad=True)
    positions = torch.arange(length)[None]

    def step() -> None:
        with autocast():
            out = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rope(hidden, positions))
            out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
        layer.zero_grad(set_to_none=True)
        hidden.grad = None

    return {"seconds": _time(step, reps), "flops": _flops(step)}


def projection(shapes: Shapes, rows: int, autocast: Any, reps: int) -> dict[str, float]:
    from ..label_loss import cross_entropy_sum

    head = torch.nn.Linear(shapes.width, shapes.vocab, bias=False)
    hidden = torch.randn(rows, shapes.width, requires_grad=True)
    targets = torch.randint(0, shapes.vocab, (rows,))

    def step() -> None:
        with autocast():
            loss = cross_entropy_sum(head, hidden, targets)
        loss.backward()
        head.zero_grad(set_to_none=True)
        hidden.grad = None

    return {"seconds": _time(step, reps), "flops": _flops(step)}


def vit_rate(shapes: Shapes, autocast: Any, reps: int) -> float:
    """FLOP/s of one CLIP ViT-L layer forward over 5 views' tokens (the rate the towers' FLOPs are timed at)."""
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    config = CLIPVisionConfig(hidden_size=shapes.vit_width, intermediate_size=4 * shapes.vit_width,
                              num_attention_heads=max(1, shapes.vit_width // 64))
    config._attn_implementation = "sdpa"
    layer = CLIPEncoderLayer(config).eval()
    x = torch.randn(5, shapes.vit_tokens, shapes.vit_width)

    @torch.inference_mode()
    def step() -> None:
        with autocast():
            layer(x, attention_mask=None)

    return _flops(step) / _time(step, reps)


def project(precision: str, reps: int, tower_flops: float, shapes: Shapes = Shapes()) -> dict[str, Any]:
    torch.set_num_threads(2)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    length = shapes.visual + shapes.text
    towers_s = tower_flops / vit_rate(shapes, autocast, reps)
    head_all, head_labels = projection(shapes, length, autocast, reps), projection(shapes, shapes.answer, autocast, reps)
    layer = decoder_layer(shapes, length, autocast, reps)
    parts_ours = {"towers (forward)": towers_s, f"decoder ({shapes.layers} layers, fwd+bwd)": shapes.layers * layer["seconds"],
                  "vocabulary projection + loss": head_labels["seconds"]}
    parts_hf = {**parts_ours, "vocabulary projection + loss": head_all["seconds"]}
    ours, hf = sum(parts_ours.values()), sum(parts_hf.values())
    return {"precision": precision, "shapes": asdict(shapes), "sequence_length": length, "answer_tokens": shapes.answer,
            "layer": layer, "head_all_positions": head_all, "head_label_positions": head_labels, "towers_s": towers_s,
            "ours": {"step_s": ours, "shares": {k: v / ours for k, v in parts_ours.items()}},
            "hf": {"step_s": hf, "shares": {k: v / hf for k, v in parts_hf.items()}},
            "projected_ratio_vs_hf": hf / ours}


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.projection", __doc__)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--tower-flops", type=float, default=None, help="the towers' forward FLOPs per sample (default: bench.plan's)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    tower_flops = args.tower_flops
    if tower_flops is None:
        from .plan import plan

        tower_flops = float(plan("sphinx-vi-1k")["stages"]["stage2"]["flops_per_image_sample"]["vision"])
    results = [project(precision, args.reps, tower_flops) for precision in args.precisions.split(",")]
    for r in results:
        print(f"sphinx-vi-1k stage-2 step of one sample ({r['sequence_length']} tokens, {r['answer_tokens']} with loss), {r['precision']}:")
        for side in ("ours", "hf"):
            shares = ", ".join(f"{k} {v:.1%}" for k, v in r[side]["shares"].items())
            print(f"  {side:<5}{r[side]['step_s']:>9.1f} s   {shares}")
        print(f"  projected ratio ours / transformers' LLaVA: {r['projected_ratio_vs_hf']:.3f}x")
    write_json(args.out, {"tower_flops_per_sample": tower_flops, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
