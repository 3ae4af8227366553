"""Named presets: JSON files beside this module (data, not code paths).

`tiny` uses the project's own tokenizer, whose vocabulary size and special ids are filled in
from the shipped tokenizer files. Vistral's vocabulary is 38,369 tokens; `<image>` is appended
as id 38369, hence `vocab_size` 38,370 in `sphinx-vi-1k`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..text.tokenizer import TINY_TOKENIZER, load_tokenizer
from ..text.tokens import IMAGE_TOKEN


def list_presets() -> list[str]:
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


@cache
def _tiny_token_ids() -> dict[str, int]:
    tok = load_tokenizer(TINY_TOKENIZER)
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "image_token_id": tok.convert_tokens_to_ids(IMAGE_TOKEN),
    }


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` on top: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _raw(name: str) -> dict[str, Any]:
    """A preset's config as written, its `extends` preset applied underneath (the same system, other weights or LLM)."""
    if name not in list_presets():
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    data = json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return _merged(_raw(data["extends"]), data["config"]) if "extends" in data else data["config"]


def preset_config_dict(name: str) -> dict[str, Any]:
    """The config dict of preset `name` (raises KeyError listing the presets)."""
    config = _raw(name)
    if config.get("tokenizer") == TINY_TOKENIZER:
        ids = _tiny_token_ids()
        config["image_token_id"] = ids["image_token_id"]
        config["text_config"].update({k: v for k, v in ids.items() if k != "image_token_id"})
    return config
