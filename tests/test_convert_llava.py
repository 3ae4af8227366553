"""transformers' LLaVA on disk → a sphinx_vi checkpoint with the same logits, its own template and `<image>` id."""

import pytest
import torch
from transformers import AutoTokenizer, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

from sphinx_vi import SphinxVi
from sphinx_vi.cli import main as cli_main
from sphinx_vi.convert.llava_hf import convert_llava_hf
from sphinx_vi.text.templates import TEMPLATES, MissingChatTemplateError, template_of

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _hf_llava(tmp_path, bpe_tokenizer):
    src = tmp_path / "llava-hf"
    vocab = bpe_tokenizer(src)
    tok = AutoTokenizer.from_pretrained(src)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})  # as llava-hf ships it
    tok.save_pretrained(src)
    torch.manual_seed(5)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=MistralConfig(vocab_size=vocab + 1, **TEXT),
                         image_token_id=vocab, vision_feature_layer=-2, image_seq_length=16)
    hf = LlavaForConditionalGeneration(config).eval()
    hf.save_pretrained(src)
    return src, hf


def test_a_saved_transformers_llava_converts_with_equal_logits(tmp_path, bpe_tokenizer):
    src, hf = _hf_llava(tmp_path, bpe_tokenizer)
    with pytest.raises(MissingChatTemplateError, match="no chat template"):
        convert_llava_hf(src, tmp_path / "none")
    assert cli_main(["convert", "--from", "llava-hf", str(src), "--out", str(tmp_path / "out"), "--template", "vicuna_v1"]) == 0
    vi = SphinxVi.from_pretrained(tmp_path / "out")
    assert template_of(vi.processor.tokenizer.chat_template) is TEMPLATES["vicuna_v1"]
    assert vi.processor.image_token_id == hf.config.image_token_id and vi.model.config.layout.tokens_per_image == 16
    image = (torch.rand(30, 20, 3) * 255).to(torch.uint8).numpy()
    inputs = vi.processor(vi.processor.apply_chat_template([{"role": "user", "content": "<image>\nwhat is this"}]), [image])
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = vi.model(**inputs).logits
        theirs = hf(input_ids=inputs["input_ids"], pixel_values=(inputs["pixel_values"][:, 0] - mean) / std).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_the_convert_command_names_bad_input(tmp_path, capsys):
    assert cli_main(["convert", "--from", "llava", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["convert", "--from", "blip", str(tmp_path), "--out", str(tmp_path / "o")])
