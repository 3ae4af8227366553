"""On paper, past this machine: what a real run of a preset costs, computed from the model itself.

    python -m sphinx_vi.bench.plan --preset sphinx-vi-1k --out reports/perf/plan_sphinx_vi_1k.json

The model is built on the `meta` device (no memory, no weights); FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` running the real forward/backward on meta tensors:
frozen towers forward only, the decoder forward + backward, the vocabulary projection on answer
tokens only (our `skip_logits`). Steps and batch sizes come from the stage YAMLs. GPU-hours =
model FLOPs / (GPUs × peak × MFU); the MFU is an assumption, stated in the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..configuration import SphinxViConfig
from ..modeling import SphinxViForConditionalGeneration
from ..presets import preset_config_dict
from ..summary import summarize
from ..train.config import load_config
from . import command_parser, write_json

REPO = Path(__file__).resolve().parents[2]
A100_BF16_PEAK = 312e12  # dense bf16 FLOP/s of one A100
NF4_BITS = 4.127  # 4-bit codes + blockwise absmax (block 64) with double quantisation (QLoRA paper)


@dataclass
class PlanAssumptions:
    """What the table assumes beyond the model and the stage configs (stated in the output)."""

    gpus: int = 8
    peak_flops: float = A100_BF16_PEAK
    mfu: float = 0.40  # model-FLOPs utilisation of a well-tuned ZeRO-3 run with checkpointing
    stage1_text_tokens: int = 80  # caption tokens per stage-1 image sample (all carry loss)
    stage1_textonly_tokens: int = 512  # tokens of one text-only sample (all carry loss)
    stage2_text_tokens: int = 200  # prompt + answer tokens per stage-2 sample
    stage2_answer_tokens: int = 60  # of which carry loss


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def sample_flops(model: SphinxViForConditionalGeneration, text_tokens: int, label_tokens: int, with_image: bool) -> dict[str, int]:
    """Training FLOPs of one sample: towers (forward), projector (fwd+bwd), decoder (fwd+bwd), lm_head on labels."""
    cfg = model.config
    V, R = cfg.layout.num_views, cfg.layout.views.resolution
    D = cfg.text_config.hidden_size
    L = text_tokens + (cfg.layout.tokens_per_image if with_image else 0)
    out = {"vision": 0, "decoder": 0, "lm_head": 0}
    if with_image:
        pix = torch.zeros(1, V, 3, R, R, device="meta")
        out["vision"] = _flops(lambda: model.vision(pix))
        # the projector trains: its backward costs ~2× its forward
        in_width = int(model.vision.projector[0].in_features)  # type: ignore[arg-type]  # an nn.Linear
        out["vision"] += 2 * 2 * V * cfg.layout.tokens_per_view * in_width * D
    emb = torch.zeros(1, L, D, device="meta", requires_grad=True)
    mask = torch.zeros(1, 1, L, L, device="meta")  # a ready 4-D mask: meta tensors cannot be inspected
    # (attention FLOPs are counted over the full L×L square, the usual MFU convention)

    def decoder() -> None:
        hidden = model.language_model.get_decoder()(inputs_embeds=emb, attention_mask=mask, use_cache=False).last_hidden_state
        hidden.sum().backward()

    out["decoder"] = _flops(decoder)
    out["lm_head"] = 6 * label_tokens * D * cfg.text_config.vocab_size
    out["total"] = sum(out.values())
    out["sequence_length"] = L
    return out


def plan(preset: str = "sphinx-vi-1k", assumptions: PlanAssumptions | None = None) -> dict[str, Any]:
    a = assumptions or PlanAssumptions()
    info = summarize(preset)
    config = SphinxViConfig(**preset_config_dict(preset))
    with torch.device("meta"):
        model = SphinxViForConditionalGeneration(config)
    model.requires_grad_(False)
    model.language_model.requires_grad_(True)  # the stage configs train [projector, llm]: weight gradients count
    tc = config.text_config
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    kv_bytes_per_token = 2 * tc.num_hidden_layers * tc.num_key_value_heads * head_dim * 2  # K and V, bf16
    lm_linear = sum(m.weight.numel() for n, m in model.language_model.named_modules()
                    if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    total = info["total_parameters"]
    merged = SphinxViConfig(**{**preset_config_dict(preset), "vision": {**(config.vision or {}), "merge_2x2": not config.vision_config.merge_2x2}})
    tokens = {config.vision_config.merge_2x2: config.layout.tokens_per_image, not config.vision_config.merge_2x2: merged.layout.tokens_per_image}

    stages = {}
    for stage, yaml in (("stage1", "sphinx_vi_1k_stage1.yaml"), ("stage2", "sphinx_vi_1k_stage2.yaml")):
        cfg = load_config(REPO / "train" / "configs" / yaml)
        samples = cfg.max_steps * cfg.batch_size * cfg.grad_accum * a.gpus
        if stage == "stage1":
            per = sample_flops(model, a.stage1_text_tokens, a.stage1_text_tokens, with_image=True)
            text_samples = cfg.max_steps * cfg.text_batch_size * cfg.grad_accum * a.gpus
            text = sample_flops(model, a.stage1_textonly_tokens, a.stage1_textonly_tokens, with_image=False)
            flops = samples * per["total"] + text_samples * text["total"]
        else:
            per = sample_flops(model, a.stage2_text_tokens, a.stage2_answer_tokens, with_image=True)
            text_samples, flops = 0, samples * per["total"]
        gpu_hours = flops / (a.peak_flops * a.mfu) / 3600
        stages[stage] = {"steps": cfg.max_steps, "image_samples": samples, "text_only_samples": text_samples,
                         "flops_per_image_sample": per, "total_flops": flops, "gpu_hours": gpu_hours,
                         "wall_hours": gpu_hours / a.gpus}
    return {
        "preset": preset,
        "parameters": info["parameters"],
        "total_parameters": total,
        "weights_bf16_gb": total * 2 / 1e9,
        "weights_llm_nf4_rest_bf16_gb": (lm_linear * NF4_BITS / 8 + (total - lm_linear) * 2) / 1e9,
        "visual_tokens_per_image": {"merge_2x2": tokens[True], "no_merge": tokens[False]},
        "kv_cache_bytes_per_1k_tokens": 1000 * kv_bytes_per_token,
        "stages": stages,
        "assumptions": asdict(a),
    }


def format_plan(p: dict[str, Any]) -> str:
    a = p["assumptions"]
    rows = [f"preset {p['preset']} (built on the meta device)", "", f"{'part':<34}{'parameters':>16}"]
    rows += [f"{k:<34}{v:>16,}" for k, v in p["parameters"].items()]
    rows += [f"{'total':<34}{p['total_parameters']:>16,}", "",
             f"weights, bf16:                      {p['weights_bf16_gb']:.1f} GB",
             f"weights, LLM linears NF4, rest bf16: {p['weights_llm_nf4_rest_bf16_gb']:.1f} GB",
             f"visual tokens per image:            {p['visual_tokens_per_image']['no_merge']} "
             f"(2×2 merge: {p['visual_tokens_per_image']['merge_2x2']})",
             f"KV cache per 1k tokens (bf16):       {p['kv_cache_bytes_per_1k_tokens'] / 2**20:.0f} MiB", "",
             f"{'stage':<8}{'steps':>8}{'image samples':>15}{'TFLOPs/sample':>15}{'seq len':>9}{'total EFLOPs':>14}"
             f"{'GPU-hours':>11}{'wall h':>8}"]
    for name, s in p["stages"].items():
        per = s["flops_per_image_sample"]
        rows.append(f"{name:<8}{s['steps']:>8,}{s['image_samples']:>15,}{per['total'] / 1e12:>15.1f}{per['sequence_length']:>9}"
                    f"{s['total_flops'] / 1e18:>14.1f}{s['gpu_hours']:>11,.0f}{s['wall_hours']:>8.0f}")
    rows.append(f"assumed: {a['gpus']}×A100 at {a['peak_flops'] / 1e12:.0f} TFLOP/s bf16, MFU {a['mfu']:.0%}; "
                f"stage-1 captions {a['stage1_text_tokens']} tokens + text-only samples of {a['stage1_textonly_tokens']}; "
                f"stage-2 text {a['stage2_text_tokens']} tokens ({a['stage2_answer_tokens']} answer)")
    return "\n".join(rows)


def main() -> None:
    p = command_parser("python -m sphinx_vi.bench.plan", __doc__)
    p.add_argument("--preset", default="sphinx-vi-1k")
    p.add_argument("--mfu", type=float, default=PlanAssumptions.mfu)
    p.add_argument("--gpus", type=int, default=PlanAssumptions.gpus)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    r = plan(args.preset, PlanAssumptions(mfu=args.mfu, gpus=args.gpus))
    print(format_plan(r))
    write_json(args.out, r)


if __name__ == "__main__":
    main()
