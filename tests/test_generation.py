"""The one inference path: messages, generate options with the cached box grammar, batched answers."""

import pytest
from transformers import LogitsProcessorList

from sphinx_vi.generation import DEFAULT_GENERATION, Generator, as_pairs, build_messages
from sphinx_vi.prompts import TASK_PROMPTS, Task, task_prompt
from sphinx_vi.text.tokens import IMAGE_TOKEN


def test_messages_put_the_image_in_the_first_user_turn_once():
    msgs = build_messages("Còn gì?", [("Có gì?", "Một hình tròn.")])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == f"{IMAGE_TOKEN}\nCó gì?" and msgs[2]["content"] == "Còn gì?"
    given = build_messages(f"Ảnh {IMAGE_TOKEN} này?", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert "".join(m["content"] for m in given).count(IMAGE_TOKEN) == 1 and given[0]["content"] == "a"


def test_history_pairs_or_none_when_turns_do_not_alternate():
    assert as_pairs(None) == [] and as_pairs([("a", "b")]) == [("a", "b")]
    assert as_pairs([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == [("a", "b")]
    assert as_pairs([{"role": "user", "content": "a"}]) is None
    assert as_pairs([{"role": "assistant", "content": "b"}]) is None


def test_options_add_the_grammar_last_and_build_it_once(tiny):
    gen = tiny.generator
    tok = tiny.processor.tokenizer
    first = gen.options(max_new_tokens=7, logits_processor=[object()])
    assert first["max_new_tokens"] == 7 and first["do_sample"] is DEFAULT_GENERATION["do_sample"]
    assert first["pad_token_id"] == tok.pad_token_id and first["eos_token_id"] == tok.eos_token_id
    assert isinstance(first["logits_processor"], LogitsProcessorList) and first["logits_processor"][-1] is gen.box_grammar
    assert gen.options()["logits_processor"][-1] is first["logits_processor"][-1]  # cached, not rebuilt per call
    assert "logits_processor" not in gen.options(constrain_boxes=False)


def test_generate_and_answer_are_the_api_s_answers(tiny, world_image):
    """The API, the eval runner (conversations) and answer() (prompts) decode the same ids."""
    gen = Generator(tiny.model, tiny.processor)
    image = gen.processor.load(world_image)
    prompt = task_prompt("rec", "vi", expression="hình tròn màu đỏ")
    via_prompts = gen.answer([image, image], [prompt, "Có gì?"], max_new_tokens=12)
    via_messages = gen.generate([image, image], [build_messages(prompt), build_messages("Có gì?")], max_new_tokens=12)
    assert via_prompts == via_messages
    assert tiny.chat([image, image], [prompt, "Có gì?"], max_new_tokens=12) == via_prompts
    assert tiny.answer(image, "rec", "vi", expression="hình tròn màu đỏ", max_new_tokens=12).text == via_prompts[0]


def test_the_api_answer_returns_text_detections_and_warnings_together(tiny, monkeypatch, world_image):
    seen = {}

    def fake(images, prompts, history=None, **gen):
        seen["prompts"] = prompts
        return ["<p>hình tròn</p> [0.10,0.25,0.30,0.45] <p>b</p> [0.1,zz]"] * len(images)

    monkeypatch.setattr(tiny.generator, "answer", fake)
    answer = tiny.answer(world_image, "detect", category="hình tròn")
    assert seen["prompts"] == [task_prompt("detect", "vi", category="hình tròn")]
    assert answer.text.startswith("<p>hình tròn</p>") and len(answer.detections) == 1 and answer.warnings
    kp = tiny.answer(world_image, "keypoints_box", "en", box=(12.8, 32, 38.4, 57.6))
    assert seen["prompts"][0] == task_prompt("keypoints_box", "en", box="[0.10,0.25,0.30,0.45]")  # pixels → the image's frame
    assert kp.image_size == (128, 128)
    with pytest.raises(KeyError, match="unknown task"):
        tiny.answer(world_image, "segment")  # type: ignore[arg-type]


def test_the_task_literal_names_every_prompt():
    assert set(Task.__args__) == set(TASK_PROMPTS)
