"""Describe a preset without its weights: build it on the `meta` device and count."""

from __future__ import annotations

from typing import Any

import torch

from .configuration import SphinxViConfig
from .modeling import SphinxViForConditionalGeneration
from .presets import preset_config_dict


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(name: str) -> dict[str, Any]:
    """Parameters per part, visual tokens per image and per view, for preset `name`."""
    config = SphinxViConfig(**preset_config_dict(name))
    with torch.device("meta"):
        model = SphinxViForConditionalGeneration(config)
    parts = {f"vision.{t.spec.name}": _count(t) for t in model.vision.towers}  # grid encoders, source towers, Q-Former
    parts["vision.adapters"] = sum(p.numel() for p in model.vision.adapter_parameters())
    parts["language_model"] = _count(model.language_model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layout = config.layout
    return {
        "preset": name,
        "parameters": parts,
        "total_parameters": _count(model),
        "trainable_parameters_default": trainable,
        "views": layout.num_views,
        "resolution": layout.views.resolution,
        "tokens_per_view": layout.tokens_per_view,
        "visual_tokens_per_image": layout.tokens_per_image,
    }


def format_summary(info: dict[str, Any]) -> str:
    rows = [f"preset {info['preset']}", f"{'part':<34}{'parameters':>16}"]
    rows += [f"{k:<34}{v:>16,}" for k, v in info["parameters"].items()]
    rows += [
        f"{'total':<34}{info['total_parameters']:>16,}",
        f"{'trainable by default':<34}{info['trainable_parameters_default']:>16,}",
        f"views {info['views']} × {info['tokens_per_view']} tokens = {info['visual_tokens_per_image']} visual tokens per image",
    ]
    return "\n".join(rows)
