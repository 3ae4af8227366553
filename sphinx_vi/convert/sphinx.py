"""SPHINX / SPHINX-1k / SPHINX-v2-1k (LLaMA2-Accessory `consolidated.NN-of-MM.model.pth` shards) → sphinx_vi.

LLaMA2-Accessory saves one file per tensor-parallel rank, every key under `llma.`:

- the LLM in Meta's LLaMA layout: `tok_embeddings` (split on dim 1), `layers.N.attention.{wq,wk,wv}`,
  `feed_forward.{w1,w3}`, `output` (column-parallel: dim 0), `attention.wo`, `feed_forward.w2`
  (row-parallel: dim 1), norms replicated. q and k are stored for Meta's interleaved rotary pairs:
  transformers' rotate-half RoPE needs them permuted (as transformers' own LLaMA converter does);
- `clip.visual.*` (open_clip ViT-L/14) → transformers CLIP names (q/k/v split out of `in_proj`);
- `openclip_convnext_xxl.*` (the open_clip / timm trunk: our module tree as it is);
- `dinov2_vitg14.*` (torch-hub DINOv2) → transformers Dinov2 names (q/k/v out of `qkv`, SwiGLU's `w12`
  split into gate and up);
- `qformer.{vision_model,qformer,query_tokens}` (transformers' Blip2Model: the EVA tower and the Q-Former);
- `visual_proj`, `qformer_proj`, `start_img`, `end_img`.

Everything else is named in an error, except what SPHINX never runs (`UNUSED`: the CLIP text tower
left in the checkpoint, CLIP's output projection). The architecture comes from a preset
(`sphinx-1k` by default); the checkpoint's shapes must match it exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..configuration import SphinxViConfig
from ..presets import preset_config_dict
from ..text.tokenizer import ensure_image_token
from ..vision.mixed import tower_path
from ..weights import WeightFilesError, read_tensors
from .writer import check_against, expected_state, grow_vocab, tower_buffers, write_checkpoint

# LLaMA2-Accessory's model-parallel layers and the dimension each is split on across ranks.
COLUMN_PARALLEL = ("attention.wq.", "attention.wk.", "attention.wv.", "feed_forward.w1.", "feed_forward.w3.", "output.")
ROW_PARALLEL = ("attention.wo.", "feed_forward.w2.")
PARALLEL_EMBEDDING = ("tok_embeddings.",)
# Keys of the checkpoint SPHINX never runs: CLIP's text tower leftovers and its output projection.
UNUSED = re.compile(r"^clip\.(token_embedding|positional_embedding|ln_final|text_projection|logit_scale|transformer|visual\.proj$)")


class SphinxCheckpointError(ValueError):
    """A SPHINX checkpoint with a missing shard, a key we do not know, or copies that disagree (names file and key)."""


def consolidated_shards(src: Path) -> list[Path]:
    """The `consolidated.NN-of-MM.model.pth` files of `src`, every rank present."""
    found = sorted(src.glob("consolidated.*-of-*.model.pth"))
    if not found:
        raise WeightFilesError(f"{src}: no consolidated.NN-of-MM.model.pth shards (not a LLaMA2-Accessory checkpoint)")
    total = int(found[0].name.split("-of-")[1].split(".")[0])
    names = {f.name for f in found}
    missing = [f"consolidated.{r:02d}-of-{total:02d}.model.pth" for r in range(total)
               if f"consolidated.{r:02d}-of-{total:02d}.model.pth" not in names]
    if missing:
        raise WeightFilesError(f"{src}: shard(s) {', '.join(missing)} of the {total}-way split are missing")
    return [src / f"consolidated.{r:02d}-of-{total:02d}.model.pth" for r in range(total)]


def _split_dim(key: str) -> int | None:
    """The dimension LLaMA2-Accessory splits `key` on across ranks (None: replicated)."""
    name = key.split("layers.", 1)[-1].split(".", 1)[-1] if key.startswith("layers.") else key
    if name.startswith(COLUMN_PARALLEL):
        return 0
    if name.startswith(ROW_PARALLEL + PARALLEL_EMBEDDING):
        return 1
    return None


def merge_tensor_parallel(shards: list[Path]) -> dict[str, torch.Tensor]:
    """One state dict (keys without `llma.`) from the ranks' files: split layers concatenated on their dimension,
    replicated tensors checked equal in every rank."""
    per_rank: list[dict[str, torch.Tensor]] = []
    for shard in shards:
        state = {}
        for key, tensor, _ in read_tensors([shard]):
            if not key.startswith("llma."):
                raise SphinxCheckpointError(f"{shard}: key {key!r} is outside the model (`llma.`)")
            state[key[len("llma."):]] = tensor
        per_rank.append(state)
    merged = {}
    for key in per_rank[0]:
        parts = [rank.get(key) for rank in per_rank]
        if any(p is None for p in parts):
            raise SphinxCheckpointError(f"{shards[parts.index(None)]}: key {'llma.' + key!r} is missing from this rank")
        dim = _split_dim(key) if len(parts) > 1 else None
        if dim is None:
            for r, p in enumerate(parts[1:], 1):
                if not torch.equal(p, parts[0]):  # type: ignore[arg-type]
                    raise SphinxCheckpointError(f"{shards[r]}: replicated tensor {'llma.' + key!r} differs from rank 0's")
            merged[key] = parts[0]
        else:
            merged[key] = torch.cat(parts, dim=dim)  # type: ignore[arg-type]
    return merged  # type: ignore[return-value]


def rope_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """(heads·hd, D) q/k rows from Meta's interleaved pairs to transformers' rotate-half halves."""
    rows, cols = w.shape
    return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


_LLAMA_LAYER = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
                "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
                "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def _llama(key: str, t: torch.Tensor, heads: int, kv_heads: int) -> dict[str, torch.Tensor]:
    if key == "tok_embeddings.weight":
        return {"language_model.model.embed_tokens.weight": t}
    if key == "norm.weight":
        return {"language_model.model.norm.weight": t}
    if key == "output.weight":
        return {"language_model.lm_head.weight": t}
    _, n, rest = key.split(".", 2)  # layers.N.<module>.weight
    module = rest.rsplit(".", 1)[0]
    if module not in _LLAMA_LAYER:
        return {}
    if module == "attention.wq":
        t = rope_permute(t, heads)
    elif module == "attention.wk":
        t = rope_permute(t, kv_heads)
    return {f"language_model.model.layers.{n}.{_LLAMA_LAYER[module]}.weight": t}


def _split3(prefix: str, names: tuple[str, str, str], t: torch.Tensor, suffix: str) -> dict[str, torch.Tensor]:
    q, k, v = t.chunk(3, dim=0)
    return {f"{prefix}{names[0]}.{suffix}": q, f"{prefix}{names[1]}.{suffix}": k, f"{prefix}{names[2]}.{suffix}": v}


def _open_clip_vit(key: str, t: torch.Tensor, out: str) -> dict[str, torch.Tensor]:
    """open_clip VisionTransformer (`clip.visual.` stripped) → transformers CLIPVisionModel under `out`."""
    simple = {"class_embedding": "embeddings.class_embedding", "positional_embedding": "embeddings.position_embedding.weight",
              "conv1.weight": "embeddings.patch_embedding.weight"}
    if key in simple:
        return {out + simple[key]: t}
    for ours, theirs in (("ln_pre.", "pre_layrnorm."), ("ln_post.", "post_layernorm.")):
        if key.startswith(ours):
            return {out + theirs + key[len(ours):]: t}
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", key)
    if m is None:
        return {}
    n, rest = m.groups()
    layer = f"{out}encoder.layers.{n}."
    if rest.startswith("attn.in_proj_"):
        return _split3(layer + "self_attn.", ("q_proj", "k_proj", "v_proj"), t, "weight" if rest.endswith("weight") else "bias")
    rename = {"attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
              "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
    for ours, theirs in rename.items():
        if rest.startswith(ours):
            return {layer + theirs + rest[len(ours):]: t}
    return {}


def _dinov2_hub(key: str, t: torch.Tensor, out: str) -> dict[str, torch.Tensor]:
    """torch-hub DINOv2 (`dinov2_vitg14.` stripped) → transformers Dinov2Model under `out`."""
    simple = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings", "mask_token": "embeddings.mask_token",
              "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
              "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias", "norm.weight": "layernorm.weight",
              "norm.bias": "layernorm.bias"}
    if key in simple:
        return {out + simple[key]: t}
    m = re.match(r"blocks\.(?:\d+\.)?(\d+)\.(.+)$", key) if key.startswith("blocks.") else None  # chunked blocks too
    if m is None:
        return {}
    n, rest = m.groups()
    layer = f"{out}encoder.layer.{n}."
    if rest.startswith("attn.qkv."):
        return _split3(layer + "attention.", ("q_proj", "k_proj", "v_proj"), t, rest.rsplit(".", 1)[1])
    if rest.startswith("mlp.w12."):  # SwiGLU: x1, x2 = w12(x).chunk(2); silu(x1) · x2
        gate, up = t.chunk(2, dim=0)
        kind = rest.rsplit(".", 1)[1]
        return {f"{layer}mlp.gate_proj.{kind}": gate, f"{layer}mlp.up_proj.{kind}": up}
    rename = {"attn.proj.": "attention.o_proj.", "mlp.w3.": "mlp.down_proj.", "ls1.gamma": "layer_scale1.lambda1",
              "ls2.gamma": "layer_scale2.lambda1", "norm1.": "norm1.", "norm2.": "norm2."}
    for ours, theirs in rename.items():
        if rest.startswith(ours):
            return {layer + theirs + rest[len(ours):]: t}
    return {}


def map_sphinx(state: dict[str, torch.Tensor], config: SphinxViConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LLaMA2-Accessory's keys (without `llma.`) → (ours, the UNUSED keys left out); any other key that maps nowhere is an error."""
    text = config.text_config
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    specs = {spec.backend: spec for spec in config.vision_config.encoders}

    def tower(backend: str) -> str:
        return f"vision.{tower_path(specs[backend])}."

    rules: list[tuple[str, Callable[[str, torch.Tensor], dict[str, torch.Tensor]]]] = [
        ("clip.visual.", lambda k, t: _open_clip_vit(k, t, tower("clip_vit") + "model.")),
        ("openclip_convnext_xxl.", lambda k, t: {f"{tower('clip_convnext')}trunk.{k}": t}),
        ("dinov2_vitg14.", lambda k, t: _dinov2_hub(k, t, tower("dinov2") + "model.")),
        ("qformer.vision_model.", lambda k, t: {f"{tower('blip2_vision')}model.{k}": t}),
        ("qformer.qformer.", lambda k, t: {f"vision.qformer.model.{k}": t}),
        ("qformer.query_tokens", lambda k, t: {"vision.qformer.query_tokens": t}),
        ("visual_proj.", lambda k, t: {f"vision.projector.{k}": t}),
        ("qformer_proj.", lambda k, t: {f"vision.qformer_projector.{k}": t}),
        ("start_img", lambda k, t: {"vision.image_begin": t.reshape(-1)}),
        ("end_img", lambda k, t: {"vision.image_end": t.reshape(-1)}),
        ("tok_embeddings.", lambda k, t: _llama("tok_embeddings." + k, t, heads, kv_heads)),
        ("norm.", lambda k, t: _llama("norm." + k, t, heads, kv_heads)),
        ("output.", lambda k, t: _llama("output." + k, t, heads, kv_heads)),
        ("layers.", lambda k, t: _llama("layers." + k, t, heads, kv_heads)),
    ]
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        if UNUSED.match(key):
            unused.append("llma." + key)
            continue
        mapped: dict[str, torch.Tensor] = {}
        for prefix, rule in rules:
            if key.startswith(prefix):
                mapped = rule(key[len(prefix):], tensor)
                break
        if not mapped:
            raise SphinxCheckpointError(f"key {'llma.' + key!r} is not part of SPHINX's model (nothing would read it)")
        out.update(mapped)
    return out, unused


def convert_sphinx(src: str | Path, out: str | Path, *, tokenizer: str | Path, preset: str | dict = "sphinx-1k") -> Path:
    """Convert the LLaMA2-Accessory SPHINX checkpoint in `src` into a sphinx_vi checkpoint in `out` (the architecture of
    `preset`, a name or a config dict; `tokenizer`: the LLaMA-2 tokenizer directory the model was trained with)."""
    src, out = Path(src), Path(out)
    shards = consolidated_shards(src)
    state = merge_tensor_parallel(shards)
    tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    image_token_id = ensure_image_token(tok)
    raw = preset_config_dict(preset) if isinstance(preset, str) else dict(preset)
    vocab = max(int(state["tok_embeddings.weight"].shape[0]), len(tok)) if "tok_embeddings.weight" in state else len(tok)
    raw["text_config"] = {**raw["text_config"], "vocab_size": vocab}
    config = SphinxViConfig(**{**raw, "tokenizer": str(tokenizer), "image_token_id": image_token_id})
    mapped, unused = map_sphinx(state, config)
    mapped.update(tower_buffers(config))
    grow_vocab(mapped, ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"), vocab)
    check_against(expected_state(config), mapped, src)
    return write_checkpoint(out, config, mapped, tok, {"from": "sphinx", "preset": preset if isinstance(preset, str) else "custom",
                                                       "source": str(src),
                                                       "tensor_parallel_shards": len(shards),
                                                       "left_out_never_run": unused})
