"""Checkpoints in the original LLaVA layout (haotian-liu/LLaVA and its forks) → a sphinx_vi checkpoint directory.

LLaVA-1.5 and Vistral-V were released as `LlavaLlamaForCausalLM` / `LlavaVistralForCausalLM`
state dicts: the LLM under `model.*` and `lm_head`, the projector under `model.mm_projector.{0,2}`,
and (Vistral-V only) the vision tower under `model.vision_tower.vision_tower.*`; the tower is
otherwise loaded from the hub name in `mm_vision_tower`, so a local copy of it is needed here.
Every source tensor is mapped to one of ours or the conversion stops naming its file and key;
every weight of ours must be given (the projector, the LLM, the tower), so nothing is left random.

The LLaVA tokenizer has no `<image>` token (LLaVA splices a sentinel id): it is added, and the
embedding and LM-head matrices get a zero row for it (the row is never read: the processor's
`<image>` positions are overwritten by visual tokens, and generation suppresses the token).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from ..configuration import SphinxViConfig
from ..text.tokenizer import ensure_image_token
from ..weights import read_tensors, weight_files
from .llava_vision import UnsupportedLlavaError, llava_vision, tower_config
from .writer import check_against, expected_state, grow_vocab, tower_buffers, write_checkpoint


@dataclass(frozen=True)
class LlavaFamily:
    """A system released in the original LLaVA layout."""

    name: str
    model_types: tuple[str, ...]  # the `model_type` values its config.json may carry
    text_model_type: str  # the transformers architecture of its LLM
    chat_template: str  # the conversation format it was trained with (`text.templates`)


FAMILIES = {
    "llava": LlavaFamily("llava", ("llava", "llava_llama"), "llama", "vicuna_v1"),  # LLaVA-1.5 (Vicuna-7B/13B)
    "vistral-v": LlavaFamily("vistral-v", ("llava_vistral", "llava_mistral", "llava_llama"), "mistral", "vistral_v"),
}

_TOWER_PREFIX = "model.vision_tower.vision_tower."


class LlavaCheckpointError(ValueError):
    """A source that is not the checkpoint it was said to be, or lacks a part (names the file and the key)."""


def _source_config(src: Path, family: LlavaFamily) -> dict[str, Any]:
    path = src / "config.json"
    if not path.exists():
        raise LlavaCheckpointError(f"{src}: no config.json (not a LLaVA checkpoint directory)")
    cfg = json.loads(path.read_text())
    if cfg.get("model_type") not in family.model_types:
        hf_layout = cfg.get("model_type") == "llava" and "text_config" in cfg
        hint = "; transformers' LlavaForConditionalGeneration converts with --from llava-hf" if hf_layout else ""
        raise LlavaCheckpointError(f"{path}: model_type {cfg.get('model_type')!r} is not a {family.name} checkpoint "
                                   f"(expected one of {', '.join(family.model_types)}){hint}")
    checks = {
        "mm_projector_type": (cfg.get("mm_projector_type", "linear"), ("mlp2x_gelu",)),
        "mm_patch_merge_type": (cfg.get("mm_patch_merge_type", "flat"), ("flat",)),
        "image_aspect_ratio": (cfg.get("image_aspect_ratio", "square"), ("pad",)),
        "mm_use_im_start_end": (bool(cfg.get("mm_use_im_start_end", False)), (False,)),
    }
    for key, (value, allowed) in checks.items():
        if value not in allowed:
            raise UnsupportedLlavaError(f"{path}: {key} = {value!r} is not reproduced (supported: {', '.join(map(str, allowed))})")
    return cfg


def _text_config(cfg: dict[str, Any], family: LlavaFamily, vocab: int) -> dict[str, Any]:
    """The LLM's config: the fields of its own architecture out of LLaVA's merged config.json."""
    known = AutoConfig.for_model(family.text_model_type).to_dict()
    fields = {k: v for k, v in cfg.items() if k in known and k not in ("model_type", "transformers_version", "architectures",
                                                                        "torch_dtype", "dtype", "auto_map")}
    return {**fields, "model_type": family.text_model_type, "vocab_size": vocab}


def _tower_key(key: str, tower_name: str) -> str:
    """A vision-tower key (`vision_model.X` as older transformers wrote CLIP/SigLIP vision models, or `X`) → ours."""
    inner = key[len("vision_model."):] if key.startswith("vision_model.") else key
    return f"vision.encoders.{tower_name}.model.{inner}"


def _map_key(key: str, tower_name: str) -> str | None:
    """A source key → ours (None: not a key of the layout)."""
    if key.startswith(_TOWER_PREFIX):
        return _tower_key(key[len(_TOWER_PREFIX):], tower_name)
    if key.startswith("model.mm_projector.") and key.split(".")[2] in ("0", "2"):
        return "vision.projector." + key[len("model.mm_projector."):]
    if key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")):
        return "language_model." + key
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    return None


def convert_llava_original(src: str | Path, out: str | Path, family: str, *, vision_tower: str | Path | None = None,
                           tokenizer: str | Path | None = None) -> Path:
    """Convert the `family` checkpoint in `src` (config.json + weight shards) to a sphinx_vi checkpoint in `out`.

    `vision_tower`: a local copy of the repository `mm_vision_tower` names (its config and
    preprocessor; its weights unless `src` holds them). `tokenizer`: where the tokenizer files are
    (default `src`).
    """
    if family not in FAMILIES:
        raise KeyError(f"unknown LLaVA family {family!r}; known: {', '.join(FAMILIES)}")
    fam, src, out = FAMILIES[family], Path(src), Path(out)
    cfg = _source_config(src, fam)
    files = weight_files(src)
    if vision_tower is None:
        raise LlavaCheckpointError(f"{src}: the vision tower {cfg.get('mm_vision_tower')!r} is loaded from its own repository; "
                                   "pass a local copy of it (vision_tower= / --vision-tower DIR)")
    tower_dir = Path(vision_tower)
    tower = tower_config(AutoConfig.from_pretrained(tower_dir))
    preprocessor = tower_dir / "preprocessor_config.json"
    pre = json.loads(preprocessor.read_text()) if preprocessor.exists() else {}
    if tower.hidden_size != cfg.get("mm_hidden_size", tower.hidden_size):
        raise LlavaCheckpointError(f"{tower_dir}: tower width {tower.hidden_size} but {src} expects mm_hidden_size "
                                   f"{cfg['mm_hidden_size']}")
    vision = llava_vision(tower, cfg.get("mm_vision_select_layer", -2), cfg.get("mm_vision_select_feature", "patch"),
                          pre.get("image_mean"), pre.get("image_std"))

    tok = AutoTokenizer.from_pretrained(str(tokenizer or src), local_files_only=True)
    image_token_id = ensure_image_token(tok)
    vocab = max(int(cfg["vocab_size"]), len(tok))
    text: Any = _text_config(cfg, fam, vocab)  # a dict: SphinxViConfig builds the config class of its model_type
    config = SphinxViConfig(vision=vision, text_config=text, tokenizer=str(tokenizer or src),
                            chat_template=fam.chat_template,
                            image_token_id=image_token_id, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    expected = expected_state(config)
    tower_name = config.vision_config.encoders[0].name

    state: dict[str, torch.Tensor] = {}
    for key, tensor, file in read_tensors(files):
        ours = _map_key(key, tower_name)
        if ours is None:
            raise LlavaCheckpointError(f"{file}: key {key!r} is not part of the {fam.name} layout (nothing would read it)")
        if ours not in expected:
            raise LlavaCheckpointError(f"{file}: key {key!r} has no place in the converted model ({ours})")
        state[ours] = tensor
    if not any(k.startswith(f"vision.encoders.{tower_name}.") for k in state):  # the tower's weights live in its own repo
        tower_state = {k: t for k, t, _ in read_tensors(weight_files(tower_dir))}
        full_model = any(k.startswith("vision_model.") for k in tower_state)  # a whole CLIP/SigLIP: its vision half only
        for key, tensor in tower_state.items():
            if not full_model or key.startswith("vision_model."):
                state[_tower_key(key, tower_name)] = tensor
    state.update(tower_buffers(config))
    grow_vocab(state, ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"), vocab)  # room for `<image>`
    check_against(expected, state, src)
    return write_checkpoint(out, config, state, tok, {"from": fam.name, "source": str(src), "vision_tower": str(tower_dir)})
