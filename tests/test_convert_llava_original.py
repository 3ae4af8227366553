"""Original-layout LLaVA checkpoints (LLaVA-1.5, Vistral-V) convert to sphinx_vi and compute what transformers' LLaVA computes.

Each source is written here at tiny width in the exact upstream layout: `LlavaLlamaForCausalLM` /
`LlavaVistralForCausalLM` key names, fp16, two safetensors shards with an index, LLaVA's merged
config.json, a tokenizer without `<image>`, the vision tower in its own repository (LLaVA-1.5) or
inside the checkpoint (Vistral-V). The reference is transformers' `LlavaForConditionalGeneration`
holding the same weights: an independent implementation of LLaVA's forward.
"""

import json

import pytest
import torch
from huggingface_hub import save_torch_state_dict
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    SiglipVisionConfig,
)

from sphinx_vi import SphinxVi
from sphinx_vi.convert.llava_original import LlavaCheckpointError, convert_llava_original
from sphinx_vi.text.templates import TEMPLATES, template_of
from sphinx_vi.weights import IncompleteWeightsError

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8)
TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
HF_IMAGE_ID = 5  # the reference's image placeholder id (the tiny vocabulary never writes it in these prompts)


def _source(tmp_path, family, bpe_tokenizer):
    """(source dir, tower dir, the reference model) for `family` in the original LLaVA layout."""
    torch.manual_seed(11)
    vocab = bpe_tokenizer(tmp_path / "src")
    tower_cfg = CLIPVisionConfig(**VISION) if family == "llava" else SiglipVisionConfig(**VISION)
    text_cls = LlamaConfig if family == "llava" else MistralConfig
    text_cfg = text_cls(vocab_size=vocab, **TEXT, **({} if family == "llava" else {"sliding_window": 4096}))
    hf = LlavaForConditionalGeneration(LlavaConfig(vision_config=tower_cfg, text_config=text_cfg, image_token_id=HF_IMAGE_ID,
                                                   vision_feature_layer=-2, vision_feature_select_strategy="default",
                                                   image_seq_length=16 if family == "llava" else 15)).half().float().eval()
    upstream = {}  # transformers' layout → the original LLaVA layout
    for key, value in hf.state_dict().items():
        if key.startswith("model.language_model."):
            upstream["model." + key[len("model.language_model."):]] = value
        elif key.startswith("model.multi_modal_projector.linear_"):
            index = {"1": "0", "2": "2"}[key.split(".")[2][-1]]
            upstream[f"model.mm_projector.{index}.{key.split('.')[-1]}"] = value
        elif key.startswith("model.vision_tower."):
            if family == "vistral-v":  # Vistral-V's release holds its tower, as transformers 4.37 named it
                upstream["model.vision_tower.vision_tower.vision_model." + key[len("model.vision_tower."):]] = value
        else:
            upstream[key] = value  # lm_head.weight
    src = tmp_path / "src"
    save_torch_state_dict({k: v.half().contiguous() for k, v in upstream.items()}, src, max_shard_size="40KB")
    assert len(list(src.glob("*.safetensors"))) >= 2 and (src / "model.safetensors.index.json").exists()
    model_type = "llava_llama" if family == "llava" else "llava_vistral"
    config = {**text_cfg.to_dict(), "model_type": model_type, "architectures": ["LlavaLlamaForCausalLM"],
              "mm_vision_tower": "openai/clip-vit-large-patch14-336" if family == "llava" else "google/siglip-base-patch16-256-multilingual",
              "mm_hidden_size": 32, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_projector_type": "mlp2x_gelu",
              "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "torch_dtype": "float16"}
    (src / "config.json").write_text(json.dumps(config))
    tower = tmp_path / "tower"
    hf.model.vision_tower.save_pretrained(tower)  # the tower's own repository (config, weights)
    mean = [0.48145466, 0.4578275, 0.40821073] if family == "llava" else [0.5, 0.5, 0.5]
    std = [0.26862954, 0.26130258, 0.27577711] if family == "llava" else [0.5, 0.5, 0.5]
    (tower / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    return src, tower, hf, (torch.tensor(mean), torch.tensor(std))


@pytest.mark.parametrize("family, tokens, pad", [("llava", 16, (122, 116, 104)), ("vistral-v", 15, (127, 127, 127))])
def test_converted_checkpoint_computes_llavas_logits(tmp_path, family, tokens, pad, bpe_tokenizer):
    src, tower, hf, (mean, std) = _source(tmp_path, family, bpe_tokenizer)
    out = convert_llava_original(src, tmp_path / "out", family, vision_tower=tower)
    vi = SphinxVi.from_pretrained(out)
    vi.model.float()
    assert vi.model.config.layout.tokens_per_image == tokens  # LLaVA-1.5: cls dropped; Vistral-V: first SigLIP patch dropped
    assert vi.processor.settings.pad_colour == pad  # int(mean·255), as LLaVA's expand2square
    assert template_of(vi.processor.tokenizer.chat_template) is TEMPLATES["vicuna_v1" if family == "llava" else "vistral_v"]
    image = (torch.rand(20, 28, 3) * 255).to(torch.uint8).numpy()
    text = vi.processor.apply_chat_template([{"role": "user", "content": "<image>\nwhat is this"}])
    inputs = vi.processor(text, [image])
    ids = inputs["input_ids"]
    ref_ids = ids.masked_fill(ids == vi.model.config.image_token_id, HF_IMAGE_ID)
    assert int((ref_ids == HF_IMAGE_ID).sum()) == tokens
    pixels = (inputs["pixel_values"][:, 0] - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        ours = vi.model(**inputs).logits
        theirs = hf(input_ids=ref_ids, pixel_values=pixels, attention_mask=inputs["attention_mask"]).logits
    assert ours.shape[-1] == theirs.shape[-1] + 1  # one row for `<image>`
    torch.testing.assert_close(ours[..., :-1], theirs, rtol=1e-4, atol=1e-4)


def test_wrong_family_missing_parts_and_stray_keys_are_named(tmp_path, bpe_tokenizer):
    vistral, vistral_tower, _, _ = _source(tmp_path / "v", "vistral-v", bpe_tokenizer)
    with pytest.raises(LlavaCheckpointError, match="model_type 'llava_vistral' is not a llava checkpoint"):
        convert_llava_original(vistral, tmp_path / "o", "llava", vision_tower=vistral_tower)
    src, tower, _, _ = _source(tmp_path, "llava", bpe_tokenizer)
    with pytest.raises(LlavaCheckpointError, match="pass a local copy"):
        convert_llava_original(src, tmp_path / "o", "llava")
    (tower / "model.safetensors").rename(tmp_path / "away.safetensors")  # the tower's weights are nowhere
    with pytest.raises(FileNotFoundError, match="no weight files"):
        convert_llava_original(src, tmp_path / "o", "llava", vision_tower=tower)
    (tmp_path / "away.safetensors").rename(tower / "model.safetensors")
    (tmp_path / "stray").mkdir()
    save_torch_state_dict({"model.mm_projector.4.weight": torch.zeros(2)}, tmp_path / "stray")
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "stray" / f).write_bytes((src / f).read_bytes())
    with pytest.raises(LlavaCheckpointError, match=r"key 'model.mm_projector.4.weight' is not part of the llava layout"):
        convert_llava_original(tmp_path / "stray", tmp_path / "o", "llava", vision_tower=tower)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (src / shard).unlink()  # a shard the index names is gone
    with pytest.raises(FileNotFoundError, match=f"shard.*{shard}"):
        convert_llava_original(src, tmp_path / "o", "llava", vision_tower=tower)


def test_a_checkpoint_without_its_llm_head_is_refused(tmp_path, bpe_tokenizer):
    src, tower, _, _ = _source(tmp_path, "llava", bpe_tokenizer)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    head_shard = index["weight_map"]["lm_head.weight"]
    from safetensors.torch import load_file, save_file

    tensors = load_file(src / head_shard)
    tensors.pop("lm_head.weight")
    save_file(tensors, src / head_shard, metadata={"format": "pt"})
    with pytest.raises(IncompleteWeightsError, match="language_model.lm_head.weight"):
        convert_llava_original(src, tmp_path / "o", "llava", vision_tower=tower)
