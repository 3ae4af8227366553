"""4-bit (NF4) and 8-bit (LLM.int8) language models through bitsandbytes, for inference and QLoRA.

Only the LLM's linear layers are quantized: they hold almost all the weights (Vistral-7B: 7.0 of
10.7 B); the towers, projectors and embeddings keep their dtype. bitsandbytes has CPU kernels
since 0.46, so both methods run here as well as on a GPU.
"""

from __future__ import annotations

import tempfile
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM

Quantization = Literal["nf4", "int8"]
METHODS = ("nf4", "int8")


class QuantizationUnavailableError(RuntimeError):
    """Quantization was asked for without bitsandbytes installed."""


def bnb_config(method: Quantization) -> Any:
    """NF4: 4-bit weights, double quantization, bf16 compute (the QLoRA recipe); int8: LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization {method!r}: choose {' or '.join(METHODS)}")


def require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise QuantizationUnavailableError("quantization needs bitsandbytes: pip install 'sphinx_vi[quant]'") from None


def quantize_language_model(model: Any, method: Quantization, device: str | torch.device | int = "cpu") -> None:
    """Reload `model.language_model` quantized with `method` from its own weights (round trip through a
    temporary directory, as bitsandbytes quantizes while loading)."""
    config = bnb_config(method)
    require_bitsandbytes()
    with tempfile.TemporaryDirectory() as tmp:
        model.language_model.save_pretrained(tmp)
        target = torch.device(device)
        model.language_model = AutoModelForCausalLM.from_pretrained(
            tmp, quantization_config=config, device_map={"": target.index if target.type == "cuda" else target.type})
    _generic_kernel_where_packing_fails(model.language_model)


def _generic_kernel_where_packing_fails(lm: torch.nn.Module) -> None:
    """bitsandbytes' AVX-512 BF16 CPU path repacks 4-bit weights on first use and needs in_features to be a
    multiple of the quantization block (64); narrower layers (tiny models) keep its generic kernel."""
    import bitsandbytes as bnb

    for module in lm.modules():
        weight: Any = getattr(module, "weight", None)  # a bnb Params4bit: its quant_state holds the block size
        if isinstance(module, bnb.nn.Linear4bit) and module.in_features % weight.quant_state.blocksize:
            module.support_avx512bf16_for_cpu = False


def _dequantized(layer: Any) -> torch.Tensor:
    import bitsandbytes as bnb

    if isinstance(layer, bnb.nn.Linear4bit):
        weight: Any = layer.weight  # a bnb Params4bit
        data, state = weight.data, weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):  # repacked for the AVX-512 BF16 kernel by a first inference call
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            data, state = _convert_weight_packed_for_cpu_inverse(data, state)
        return bnb.functional.dequantize_4bit(data, state).float()
    return layer.weight.data.float() * layer.weight.SCB.float().unsqueeze(1) / 127.0  # LLM.int8 rows


def dequantize_language_model(lm: torch.nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace every bitsandbytes linear of `lm` by an `nn.Linear` holding its dequantized weights, with the
    deltas of LoRA adapters wrapped around it folded in; the quantization config is forgotten. Returns how
    many layers were replaced (0 for a plain model). Call it on the base model of a QLoRA run before saving."""
    try:
        import bitsandbytes as bnb
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return 0
    quantized = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    replaced = 0
    targets: list[tuple[Any, str, Any, Any]] = []  # (parent, name, layer, its quantized base): a LoRA wrapper with its base
    for module in lm.modules():
        if isinstance(module, LoraLayer):
            continue
        for name, child in module.named_children():
            base = child.get_base_layer() if isinstance(child, LoraLayer) else child
            if isinstance(base, quantized):
                targets.append((module, name, child, base))
    for module, name, child, base in targets:
        weight = _dequantized(base)
        if isinstance(child, LoraLayer):
            for adapter in child.active_adapters:
                weight = weight + child.get_delta_weight(adapter).float()  # type: ignore[attr-defined]  # every LoRA linear has it
        plain = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device=weight.device, dtype=dtype)
        with torch.no_grad():
            plain.weight.copy_(weight.to(dtype))
            if base.bias is not None:
                plain.bias.copy_(base.bias.data.to(dtype))
        setattr(module, name, plain)
        replaced += 1
    if replaced:
        config: Any = getattr(lm, "config", None)
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if config is not None and hasattr(config, attr):
                delattr(config, attr)
        if hasattr(lm, "hf_quantizer"):
            setattr(lm, "hf_quantizer", None)  # noqa: B010 - a plain attribute of a transformers model
    return replaced


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (packed 4-bit weights count as stored)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
