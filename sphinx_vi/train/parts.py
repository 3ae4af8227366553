"""Choose what learns, by name: projector, llm (full), llm_lora, vision, lm_head (GIT-LLM's experiment)."""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ..modeling import SphinxViForConditionalGeneration
from ..quantization import bnb_config, dequantize_language_model, quantize_language_model
from .config import TrainConfig


class QLoRAUnavailableError(RuntimeError):
    """QLoRA was asked for where it cannot run (no CUDA or no bitsandbytes)."""


def qlora_quantization_config() -> Any:
    """NF4 4-bit weights with bf16 compute, double quantisation (the QLoRA recipe)."""
    return bnb_config("nf4")


def check_qlora_available() -> None:
    """bitsandbytes must be installed (its 4-bit kernels run on CUDA and, since 0.46, on the CPU)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise QLoRAUnavailableError("qlora needs bitsandbytes: pip install 'sphinx_vi[quant]'") from None


def prepare_qlora(model: SphinxViForConditionalGeneration) -> None:
    """The LLM in 4-bit NF4 from its own weights, prepared for k-bit training."""
    from peft import prepare_model_for_kbit_training

    check_qlora_available()
    quantize_language_model(model, "nf4", device="cuda:0" if torch.cuda.is_available() else "cpu")
    # checkpointing is the loop's to enable (cfg.gradient_checkpointing), not peft's by default
    model.language_model = prepare_model_for_kbit_training(model.language_model, use_gradient_checkpointing=False)


def lora_config(cfg: TrainConfig) -> LoraConfig:
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.effective_lora_alpha, lora_dropout=0.0,  # type: ignore[arg-type]  # a float alpha works
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")


def apply_trainable(model: SphinxViForConditionalGeneration, cfg: TrainConfig) -> dict[str, int]:
    """Freeze everything, then unfreeze the named parts (wrapping the LLM in LoRA if asked).

    Returns trainable parameter counts per part.
    """
    model.requires_grad_(False)
    model.vision.set_towers_trainable("vision" in cfg.trainable)
    counts: dict[str, int] = {}
    if "projector" in cfg.trainable:  # every layer the mixed encoder adds around its towers
        adapters = model.vision.adapter_parameters()
        for p in adapters:
            p.requires_grad_(True)
        counts["projector"] = sum(p.numel() for p in adapters)
    if "vision" in cfg.trainable:
        counts["vision"] = sum(p.numel() for p in model.vision.tower_parameters())
    if "llm" in cfg.trainable:
        model.language_model.requires_grad_(True)
        counts["llm"] = sum(p.numel() for p in model.language_model.parameters())
    if "llm_lora" in cfg.trainable:
        if cfg.qlora:
            prepare_qlora(model)
        model.language_model = get_peft_model(model.language_model, lora_config(cfg))
        counts["llm_lora"] = sum(p.numel() for p in model.language_model.parameters() if p.requires_grad)
    if "lm_head" in cfg.trainable:
        head = model.get_output_embeddings()
        head.requires_grad_(True)
        counts["lm_head"] = sum(p.numel() for p in head.parameters())
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: `trainable` selects no parameters")
    return counts


def merge_lora(model: SphinxViForConditionalGeneration) -> SphinxViForConditionalGeneration:
    """Fold LoRA adapters into the LLM weights so the saved model is a plain checkpoint; a QLoRA run's 4-bit
    base is dequantized first, so the adapters merge into full-precision weights (not re-quantized ones)."""
    if isinstance(model.language_model, PeftModel):
        base = model.language_model.get_base_model()
        if dequantize_language_model(base):  # QLoRA: adapters folded into the dequantized weights
            model.language_model = base
        else:
            model.language_model = model.language_model.merge_and_unload()
    return model
