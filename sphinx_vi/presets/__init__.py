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


def preset_config_dict(name: str) -> dict[str, Any]:
    """The config dict of preset `name` (raises KeyError listing the presets)."""
    if name not in list_presets():
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    data = json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    config = data["config"]
    if config.get("tokenizer") == TINY_TOKENIZER:
        ids = _tiny_token_ids()
        config["image_token_id"] = ids["image_token_id"]
        config["text_config"].update({k: v for k, v in ids.items() if k != "image_token_id"})
    return config
