"""Writing a converted checkpoint: every weight checked against the architecture, then transformers' own layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict
from transformers import GenerationConfig, PreTrainedTokenizerBase

from ..configuration import SphinxViConfig
from ..modeling import SphinxViForConditionalGeneration
from ..processing import SphinxViProcessor
from ..vision.mixed import tower_path
from ..weights import IncompleteWeightsError


def expected_state(config: SphinxViConfig) -> dict[str, torch.Tensor]:
    """The state dict (shapes only: built on the meta device) a model of `config` loads."""
    with torch.device("meta"):
        return dict(SphinxViForConditionalGeneration(config).state_dict())


def tower_buffers(config: SphinxViConfig) -> dict[str, torch.Tensor]:
    """Each tower's normalisation buffers (ours; no source checkpoint holds them)."""
    out = {}
    for spec in config.vision_config.encoders:
        where = f"vision.{tower_path(spec)}"
        out[f"{where}.mean"] = torch.tensor(spec.mean).view(1, 3, 1, 1)
        out[f"{where}.std"] = torch.tensor(spec.std).view(1, 3, 1, 1)
    return out


def check_against(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], src: Path) -> None:
    """Every expected weight present with its shape, nothing extra; else one error naming the keys."""
    missing = sorted(k for k in expected if k not in state and not k.endswith("position_ids"))
    extra = sorted(k for k in state if k not in expected)
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})" if missing else "",
                f"{len(extra)} without a place (e.g. {', '.join(extra[:3])})" if extra else "",
                f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
    if any(problems):
        raise IncompleteWeightsError(f"{src}: {'; '.join(p for p in problems if p)}; nothing is left at random init")


def grow_vocab(state: dict[str, torch.Tensor], keys: tuple[str, ...], vocab: int) -> None:
    """Zero rows for added tokens (`<image>`: its rows are never read)."""
    for key in keys:
        if key in state and state[key].shape[0] < vocab:
            state[key] = torch.cat([state[key], state[key].new_zeros(vocab - state[key].shape[0], *state[key].shape[1:])])


def write_checkpoint(out: Path, config: SphinxViConfig, state: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase,
                     provenance: dict[str, Any]) -> Path:
    """Sharded safetensors (transformers' layout), config, generation config (`<image>` suppressed), tokenizer,
    processor settings and a `conversion.json` saying where it came from."""
    out.mkdir(parents=True, exist_ok=True)
    # split tensors (q/k/v out of one matrix) are views of one storage: safetensors stores each on its own
    owned = {k: v.clone() if v._base is not None or not v.is_contiguous() else v for k, v in state.items()}
    save_torch_state_dict(owned, out, max_shard_size="5GB")
    config.save_pretrained(out)
    text = config.text_config
    GenerationConfig(bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
                     suppress_tokens=[config.image_token_id]).save_pretrained(out)
    SphinxViProcessor.from_model_config(config, tokenizer=tokenizer).save_pretrained(out)
    (out / "conversion.json").write_text(json.dumps({**provenance, "tensors": len(state)}, indent=2))
    return out
