"""Parts of a full BLIP-2 checkpoint (Blip2Model / Blip2ForConditionalGeneration): its EVA ViT-g and its Q-Former.

SPHINX takes both from BLIP-2 and none of its LLM, so only the shards holding the wanted part
are read (and, from the hub, downloaded).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Blip2Config

from ..weights import fetch, read_tensors, weight_files


def blip2_config(path: Path) -> Blip2Config:
    """The BLIP-2 config of `path`; anything else is refused (its parts are only exact inside a BLIP-2)."""
    config_file = path / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.exists() else None
    if model_type != "blip-2":
        raise ValueError(
            f"{path}: not a full BLIP-2 checkpoint (model_type {model_type!r}); the Q-Former's learned queries and the EVA "
            "tower it was trained with live only there (Blip2Model / Blip2ForConditionalGeneration): `pretrained` must name one"
        )
    return Blip2Config.from_pretrained(path)


def blip2_files(ref: str, local: Path | None, prefixes: tuple[str, ...]) -> Path:
    """A directory with the BLIP-2 config and the shards holding keys under `prefixes` (downloads only those)."""
    if local is not None:
        return local
    head = fetch(ref, ["config.json", "*.index.json"])
    index = next(iter(sorted(head.glob("*.index.json"))), None)
    if index is None:
        return fetch(ref, ["config.json", "*.safetensors", "*.bin"])
    shards = sorted({f for k, f in json.loads(index.read_text())["weight_map"].items() if k.startswith(prefixes)})
    return fetch(ref, ["config.json", index.name, *shards])


def read_part(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of `path` under `prefix`, keyed without it (a key equal to `prefix` becomes "")."""
    return {key[len(prefix):].lstrip("."): tensor for key, tensor, _ in read_tensors(weight_files(path), keep=lambda k: k.startswith(prefix))}
