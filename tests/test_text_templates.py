"""Chat templates render exactly the prompts of the systems they reproduce; none is substituted silently."""

import pytest

from sphinx_vi import SphinxViConfig
from sphinx_vi.generation import Generator, build_messages
from sphinx_vi.processing import SphinxViProcessor
from sphinx_vi.text.templates import (
    SPHINX_SYSTEM,
    TEMPLATES,
    VICUNA_V1_SYSTEM,
    VISTRAL_V_SYSTEM,
    MissingChatTemplateError,
    get_template,
    template_of,
)
from sphinx_vi.text.tokenizer import TINY_TOKENIZER, load_tokenizer

CONVERSATION = build_messages("Q2", [("Q1", "A1")])  # the image goes into the first user turn


def _render(name: str) -> str:
    tok = load_tokenizer(TINY_TOKENIZER, template=name)
    return tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


def test_vistral_v_is_llava_llama2_style_with_its_vietnamese_system_prompt():
    # LLaVA SeparatorStyle.LLAMA_2, sep "", sep2 "</s>": the system prompt wraps the first turn, BOS once
    assert _render("vistral_v") == (f"<s>[INST] <<SYS>>\n{VISTRAL_V_SYSTEM}\n<</SYS>>\n\n<image>\nQ1 [/INST] A1 </s>"
                                    "[INST] Q2 [/INST]")


def test_vicuna_v1_is_llava_1_5s_prompt():
    # SeparatorStyle.TWO, sep " ", sep2 "</s>"
    assert _render("vicuna_v1") == f"<s>{VICUNA_V1_SYSTEM} USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_sphinx_puts_the_image_right_after_bos_and_ends_answers_with_hashes():
    assert _render("sphinx") == f"<s><image>{SPHINX_SYSTEM}\n\n### Human: Q1\n### Assistant: A1\n### Human: Q2\n### Assistant:"
    assert get_template("sphinx").stop_strings == ("\n###",)


def test_the_vistral_template_is_the_tiny_tokenizers_own():
    tok = load_tokenizer(TINY_TOKENIZER)
    assert template_of(tok.chat_template) is TEMPLATES["vistral"]
    assert _render("vistral") == "<s>[INST] <image>\nQ1 [/INST] A1</s><s>[INST] Q2 [/INST]"


def test_a_tokenizer_without_a_template_is_refused_unless_the_config_names_one(tmp_path, tiny_config):
    tok = load_tokenizer(TINY_TOKENIZER)
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "bare")
    (tmp_path / "bare" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(MissingChatTemplateError, match="has no chat template"):
        load_tokenizer(str(tmp_path / "bare"))
    config = SphinxViConfig(**{**tiny_config.to_dict(), "tokenizer": str(tmp_path / "bare"), "chat_template": "vicuna_v1"})
    processor = SphinxViProcessor.from_model_config(config)
    assert template_of(processor.tokenizer.chat_template) is TEMPLATES["vicuna_v1"]
    with pytest.raises(KeyError, match="unknown chat template 'vicuna'"):
        get_template("vicuna")


def test_stop_strings_end_generation_and_are_cut_from_the_answer(tiny):
    processor = SphinxViProcessor(load_tokenizer(TINY_TOKENIZER, template="sphinx"), tiny.processor.settings)
    gen = Generator(tiny.model, processor)
    options = gen.options(max_new_tokens=4)
    assert options["stop_strings"] == ["\n###"] and options["tokenizer"] is processor.tokenizer
    ids = processor.tokenizer(" [0.10,0.20,0.30,0.40]\n### Human: more", return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert gen.decode_new(ids, 0) == ["[0.10,0.20,0.30,0.40]"]
    assert "stop_strings" not in tiny.generator.options()  # the vistral template ends on EOS alone
