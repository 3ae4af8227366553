"""SPHINX-1k checkpoints (LLaMA2-Accessory's consolidated tensor-parallel shards) convert to the same function.

The source is written here at tiny width in LLaMA2-Accessory's layout: `llma.`-prefixed keys, two
ranks split on each layer's model-parallel dimension, the LLM in Meta's LLaMA layout (interleaved
rotary pairs), open_clip's ViT and ConvNeXt, torch-hub DINOv2 names, transformers' Blip2Model for
EVA + Q-Former. The reference is computed from those weights by independent code: SPHINX's image
encoding written out with open_clip's modules, transformers' Dinov2 and BLIP-2 holding the same
weights, and a Meta-style LLaMA forward (complex rotary embedding) written here.
"""

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn
from transformers import Blip2Config, Blip2Model, Dinov2Config, Dinov2Model

from sphinx_vi import SphinxVi
from sphinx_vi.convert.sphinx import SphinxCheckpointError, convert_sphinx, rope_permute
from sphinx_vi.text.templates import SPHINX_SYSTEM
from sphinx_vi.vision.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from sphinx_vi.vision.convnext import TINY_OPEN_CLIP_MODEL
from sphinx_vi.weights import IncompleteWeightsError, WeightFilesError

D, HEADS, KV_HEADS, LAYERS = 32, 4, 2, 2
R = 16  # view side: CLIP, DINOv2 and EVA at 16 px / patch 8 → cls + 2×2; ConvNeXt at 32 px → a 1×1 map repeated to 2×2
CLIP_W, DINO_W, EVA_W, QF_W = 24, 16, 20, 24


def _towers():
    torch.manual_seed(21)
    clip = VisionTransformer(image_size=R, patch_size=8, width=CLIP_W, layers=2, heads=2, mlp_ratio=2, output_dim=8,
                             act_layer=QuickGELU).eval()
    convnext = open_clip.create_model(TINY_OPEN_CLIP_MODEL).visual.trunk.eval()
    dino = Dinov2Model(Dinov2Config(hidden_size=DINO_W, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                                    use_swiglu_ffn=True, image_size=R, patch_size=8, layerscale_value=0.5)).eval()
    blip2 = Blip2Model(Blip2Config(
        vision_config=dict(hidden_size=EVA_W, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, image_size=R, patch_size=8),
        qformer_config=dict(hidden_size=QF_W, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                            encoder_hidden_size=EVA_W, cross_attention_frequency=1, vocab_size=8),
        text_config=dict(model_type="opt", vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                         word_embed_proj_dim=16, max_position_embeddings=32),
        num_query_tokens=3)).eval()
    return clip, convnext, dino, blip2


def _config(vocab: int) -> dict:
    clip_arch = dict(hidden_size=CLIP_W, intermediate_size=2 * CLIP_W, num_hidden_layers=2, num_attention_heads=2, image_size=R,
                     patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return {
        "vision": {"views_grid": 2, "resolution": R, "global_from_high": True, "grid_size": 2, "projector": "linear_ln",
                   "pad_colour": [122, 116, 104], "encoders": [
                       {"backend": "clip_vit", "arch": clip_arch, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
                       {"backend": "clip_convnext", "arch": {"open_clip_model": TINY_OPEN_CLIP_MODEL}, "image_size": 32,
                        "resize": "nearest", "grid_resize": "nearest", "head_norm": True, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
                       {"backend": "dinov2", "arch": dict(hidden_size=DINO_W, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                                                          use_swiglu_ffn=True, image_size=R, patch_size=8, layerscale_value=0.5),
                        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
                       {"backend": "blip2_vision", "name": "eva", "role": "source", "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                        "arch": dict(hidden_size=EVA_W, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, image_size=R,
                                     patch_size=8)},
                       {"backend": "qformer", "source": "eva", "num_queries": 3,
                        "arch": dict(hidden_size=QF_W, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                                     encoder_hidden_size=EVA_W, cross_attention_frequency=1, vocab_size=8)}]},
        "text_config": {"model_type": "llama", "vocab_size": vocab, "hidden_size": D, "intermediate_size": 64, "num_hidden_layers": LAYERS,
                        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "max_position_embeddings": 512,
                        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
        "chat_template": "sphinx",
    }


def _meta_llama(vocab: int) -> dict[str, torch.Tensor]:
    """A LLaMA in Meta's layout (random), as `llma.` keys without the prefix."""
    g = torch.Generator().manual_seed(22)
    hd = D // HEADS

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    state = {"tok_embeddings.weight": w(vocab, D), "norm.weight": 1 + w(D), "output.weight": w(vocab, D)}
    for n in range(LAYERS):
        state.update({f"layers.{n}.attention.wq.weight": w(D, D), f"layers.{n}.attention.wk.weight": w(KV_HEADS * hd, D),
                      f"layers.{n}.attention.wv.weight": w(KV_HEADS * hd, D), f"layers.{n}.attention.wo.weight": w(D, D),
                      f"layers.{n}.feed_forward.w1.weight": w(64, D), f"layers.{n}.feed_forward.w2.weight": w(D, 64),
                      f"layers.{n}.feed_forward.w3.weight": w(64, D), f"layers.{n}.attention_norm.weight": 1 + w(D),
                      f"layers.{n}.ffn_norm.weight": 1 + w(D)})
    return state


def _meta_forward(state: dict[str, torch.Tensor], embeds: torch.Tensor) -> torch.Tensor:
    """Meta's LLaMA forward on (B, L, D) input embeddings: RoPE on interleaved pairs as complex numbers."""
    B, L, _ = embeds.shape
    hd = D // HEADS
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    cis = torch.polar(torch.ones(L, hd // 2), torch.outer(torch.arange(L).float(), freqs))  # (L, hd/2)

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    def rotate(x):  # (B, L, H, hd) → pairs (2i, 2i+1) rotated
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * cis[None, :, None]).flatten(3)

    x = embeds
    mask = torch.full((L, L), float("-inf")).triu(1)
    for n in range(LAYERS):
        p = lambda name, n=n: state[f"layers.{n}.{name}.weight"]
        h = rms(x, p("attention_norm"))
        q = rotate((h @ p("attention.wq").T).view(B, L, HEADS, hd))
        k = rotate((h @ p("attention.wk").T).view(B, L, KV_HEADS, hd)).repeat_interleave(HEADS // KV_HEADS, dim=2)
        v = (h @ p("attention.wv").T).view(B, L, KV_HEADS, hd).repeat_interleave(HEADS // KV_HEADS, dim=2)
        att = ((q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / hd**0.5 + mask).softmax(-1)
        x = x + (att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, L, D) @ p("attention.wo").T
        h = rms(x, p("ffn_norm"))
        x = x + (F.silu(h @ p("feed_forward.w1").T) * (h @ p("feed_forward.w3").T)) @ p("feed_forward.w2").T
    return rms(x, state["norm.weight"]) @ state["output.weight"].T


def _hub_dinov2(dino: Dinov2Model) -> dict[str, torch.Tensor]:
    """transformers Dinov2 → torch-hub DINOv2 names (fused qkv, SwiGLU's w12), as DINOv2's own code stores them."""
    sd, out = dino.state_dict(), {}
    out.update({"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
                "mask_token": sd["embeddings.mask_token"], "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
                "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"], "norm.weight": sd["layernorm.weight"],
                "norm.bias": sd["layernorm.bias"]})
    for n in range(2):
        a = f"encoder.layer.{n}."
        b = f"blocks.{n}."
        for kind in ("weight", "bias"):
            out[b + "attn.qkv." + kind] = torch.cat([sd[a + f"attention.{x}_proj.{kind}"] for x in "qkv"])
            out[b + "attn.proj." + kind] = sd[a + "attention.o_proj." + kind]
            out[b + "mlp.w12." + kind] = torch.cat([sd[a + "mlp.gate_proj." + kind], sd[a + "mlp.up_proj." + kind]])
            out[b + "mlp.w3." + kind] = sd[a + "mlp.down_proj." + kind]
            out[b + "norm1." + kind], out[b + "norm2." + kind] = sd[a + "norm1." + kind], sd[a + "norm2." + kind]
        out[b + "ls1.gamma"], out[b + "ls2.gamma"] = sd[a + "layer_scale1.lambda1"], sd[a + "layer_scale2.lambda1"]
    return out


def _write_sphinx(tmp_path, vocab):
    """LLaMA2-Accessory's two-rank checkpoint of a tiny SPHINX-1k, and what its forward needs to be recomputed."""
    clip, convnext, dino, blip2 = _towers()
    llm = _meta_llama(vocab)
    g = torch.Generator().manual_seed(23)
    heads = {"visual_proj.0.weight": torch.randn(D, CLIP_W + convnext.num_features + DINO_W, generator=g) * 0.1,
             "visual_proj.0.bias": torch.randn(D, generator=g) * 0.1, "visual_proj.1.weight": 1 + torch.randn(D, generator=g) * 0.1,
             "visual_proj.1.bias": torch.randn(D, generator=g) * 0.1, "qformer_proj.0.weight": torch.randn(D, QF_W, generator=g) * 0.1,
             "qformer_proj.0.bias": torch.randn(D, generator=g) * 0.1, "qformer_proj.1.weight": 1 + torch.randn(D, generator=g) * 0.1,
             "qformer_proj.1.bias": torch.randn(D, generator=g) * 0.1, "start_img": torch.randn(1, 1, D, generator=g),
             "end_img": torch.randn(1, 1, D, generator=g)}
    full = {**llm, **heads}
    full.update({f"clip.visual.{k}": v for k, v in clip.state_dict().items()})
    full.update({"clip.token_embedding.weight": torch.zeros(5, 4), "clip.logit_scale": torch.ones(())})  # text leftovers
    full.update({f"openclip_convnext_xxl.{k}": v for k, v in convnext.state_dict().items()})
    full.update({f"dinov2_vitg14.{k}": v for k, v in _hub_dinov2(dino).items()})
    full.update({f"qformer.{k}": v for k, v in blip2.state_dict().items()
                 if k.startswith(("vision_model.", "qformer.", "query_tokens"))})
    src = tmp_path / "sphinx"
    src.mkdir()
    for rank in range(2):
        shard = {}
        for key, value in full.items():
            name = key.split(".", 2)[-1] if key.startswith("layers.") else key
            if name.startswith(("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3", "output")):
                value = value.chunk(2, dim=0)[rank]
            elif name.startswith(("attention.wo", "feed_forward.w2", "tok_embeddings")):
                value = value.chunk(2, dim=1)[rank]
            shard["llma." + key] = value.clone()
        torch.save({"model": shard} if rank == 0 else shard, src / f"consolidated.{rank:02d}-of-02.model.pth")
    return src, (clip, convnext, dino, blip2, llm, heads)


def _reference(parts, views: torch.Tensor, ids: torch.Tensor, image_id: int) -> torch.Tensor:
    """SPHINX's forward, from the source weights, for (1, V, 3, R, R) views and ids with the image block after BOS."""
    clip, convnext, dino, blip2, llm, heads = parts
    v = views[0]  # (V, 3, R, R)
    clip_in = (v - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    dino_in = (v - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        x = clip.conv1(clip_in).flatten(2).transpose(1, 2)  # SPHINX's clip_encode_image
        x = torch.cat([clip.class_embedding.view(1, 1, -1).expand(len(v), 1, -1), x], dim=1) + clip.positional_embedding
        clip_tokens = clip.ln_post(clip.transformer(clip.ln_pre(x)))  # (V, 5, CLIP_W): ln_post on every token
        trunk = copy.deepcopy(convnext)
        trunk.head.global_pool, trunk.head.flatten = nn.Identity(), nn.Identity()
        fmap = trunk(F.interpolate(clip_in, size=(32, 32)))  # nearest, head.norm applied
        fmap = fmap.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).flatten(2).transpose(1, 2)
        conv_tokens = torch.cat([fmap.mean(1, keepdim=True), fmap], dim=1)
        dino_tokens = dino(pixel_values=dino_in).last_hidden_state
        queries = blip2.get_qformer_features(pixel_values=clip_in)  # (V, 3, QF_W)
        visual = torch.cat([clip_tokens, conv_tokens, dino_tokens], dim=-1) @ heads["visual_proj.0.weight"].T + heads["visual_proj.0.bias"]
        visual = F.layer_norm(visual, (D,), heads["visual_proj.1.weight"], heads["visual_proj.1.bias"])
        q = queries @ heads["qformer_proj.0.weight"].T + heads["qformer_proj.0.bias"]
        q = F.layer_norm(q, (D,), heads["qformer_proj.1.weight"], heads["qformer_proj.1.bias"])
        start, end = heads["start_img"].expand(len(v), 1, D), heads["end_img"].expand(len(v), 1, D)
        image = torch.cat([start, q, visual, end], dim=1).reshape(1, -1, D)  # views in order, each 1 + 3 + 5 + 1
        embeds = llm["tok_embeddings.weight"][ids.clamp(max=llm["tok_embeddings.weight"].shape[0] - 1)]
        is_image = ids == image_id
        assert int(is_image.sum()) == image.shape[1] and bool(is_image[0, 1]) and not bool(is_image[0, 0])  # right after BOS
        embeds[is_image] = image[0]
        return _meta_forward(llm, embeds)


def test_a_tensor_parallel_sphinx_checkpoint_converts_to_sphinxs_logits(tmp_path, bpe_tokenizer):
    vocab = bpe_tokenizer(tmp_path / "tokenizer")
    src, parts = _write_sphinx(tmp_path, vocab)
    out = convert_sphinx(src, tmp_path / "out", tokenizer=tmp_path / "tokenizer", preset=_config(vocab))
    vi = SphinxVi.from_pretrained(out)
    assert vi.model.config.layout.tokens_per_image == 5 * (1 + 3 + 5 + 1)
    prompt = vi.processor.apply_chat_template([{"role": "user", "content": "<image>\nwhat is this"}])
    assert prompt.startswith(f"<s><image>{SPHINX_SYSTEM}")
    image = (torch.rand(24, 40, 3) * 255).to(torch.uint8).numpy()
    inputs = vi.processor(prompt, [image])
    with torch.no_grad():
        ours = vi.model(**inputs).logits
    theirs = _reference(parts, inputs["pixel_values"], inputs["input_ids"], vi.model.config.image_token_id)
    assert ours.shape[-1] == vocab + 1  # the `<image>` row
    torch.testing.assert_close(ours[..., :vocab], theirs, rtol=1e-4, atol=1e-4)
    import json

    record = json.loads((out / "conversion.json").read_text())  # what was left out is said, not silently dropped
    assert sorted(record["left_out_never_run"]) == ["llma.clip.logit_scale", "llma.clip.token_embedding.weight", "llma.clip.visual.proj"]


def test_rope_permutation_turns_interleaved_pairs_into_halves():
    w = torch.arange(8.0).repeat_interleave(3).view(8, 3)  # one head of 8 dims: rows 0..7
    assert rope_permute(w, 1)[:, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_bad_sphinx_checkpoints_are_named(tmp_path, bpe_tokenizer):
    vocab = bpe_tokenizer(tmp_path / "tokenizer")
    src, _ = _write_sphinx(tmp_path, vocab)
    cfg = _config(vocab)
    wrong = {**cfg, "text_config": {**cfg["text_config"], "intermediate_size": 128}}  # another architecture than the weights'
    with pytest.raises(IncompleteWeightsError, match=r"of another shape \(e.g. language_model.model.layers.0.mlp"):
        convert_sphinx(src, tmp_path / "o", tokenizer=tmp_path / "tokenizer", preset=wrong)
    rank1 = torch.load(src / "consolidated.01-of-02.model.pth", weights_only=True)
    torch.save({**rank1, "llma.visual_proj.0.bias": rank1["llma.visual_proj.0.bias"] + 1},  # a replicated tensor that disagrees
               src / "consolidated.01-of-02.model.pth")
    with pytest.raises(SphinxCheckpointError, match=r"consolidated.01-of-02.*'llma.visual_proj.0.bias' differs"):
        convert_sphinx(src, tmp_path / "o", tokenizer=tmp_path / "tokenizer", preset=cfg)
    rank1["llma.extra_head.weight"] = torch.zeros(1)
    rank0 = torch.load(src / "consolidated.00-of-02.model.pth", weights_only=True)["model"]
    rank0["llma.extra_head.weight"] = torch.zeros(1)
    torch.save(rank0, src / "consolidated.00-of-02.model.pth")
    torch.save(rank1, src / "consolidated.01-of-02.model.pth")
    with pytest.raises(SphinxCheckpointError, match="'llma.extra_head.weight' is not part of SPHINX"):
        convert_sphinx(src, tmp_path / "o", tokenizer=tmp_path / "tokenizer", preset=cfg)
    (src / "consolidated.01-of-02.model.pth").unlink()
    with pytest.raises(WeightFilesError, match="consolidated.01-of-02.model.pth of the 2-way split are missing"):
        convert_sphinx(src, tmp_path / "o", tokenizer=tmp_path / "tokenizer", preset=cfg)


def test_the_convert_command_converts_sphinx(tmp_path, bpe_tokenizer, capsys):
    from sphinx_vi.cli import main

    assert main(["convert", "--from", "sphinx", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert main(["convert", "--from", "sphinx", str(tmp_path), "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path)]) == 2
    assert "no consolidated" in capsys.readouterr().err
