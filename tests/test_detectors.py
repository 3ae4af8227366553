"""Other grounding models as detectors: a tiny random Kosmos-2 built from transformers' own classes, run end to end."""

import pytest

from sphinx_vi.detectors import ForeignDetector, ForeignModelError
from sphinx_vi.grounding import read_answer
from sphinx_vi.tools.tiny_models import save_tiny_florence2, save_tiny_kosmos2, save_tiny_qwen2_5_vl

EXAMPLE = "sphinx_vi/assets/examples/shapes.png"


@pytest.fixture(scope="module")
def kosmos2(tmp_path_factory):
    return save_tiny_kosmos2(tmp_path_factory.mktemp("kosmos2"))


def test_a_local_kosmos2_checkpoint_detects_end_to_end(kosmos2):
    det = ForeignDetector.load(kosmos2)  # the family from config.json's model_type
    assert det.family.name == "kosmos2" and det.family.dialect == "kosmos2"
    answer = det.detect(EXAMPLE, "hình tròn", max_new_tokens=8)
    assert answer.image_size == (320, 240)
    assert answer.text.startswith("<grounding><phrase> hình tròn</phrase>")  # the prompt's phrase, then the model's tokens
    assert "<patch_index_" in answer.text and "</image>" not in answer.text
    again = read_answer(answer.text, answer.image_size, "kosmos2")
    assert answer.detections == again.detections  # the answer is read by the Kosmos-2 grammar


def test_a_local_florence2_checkpoint_detects_end_to_end(tmp_path):
    det = ForeignDetector.load(save_tiny_florence2(tmp_path / "florence2"))
    assert det.family.name == "florence2"
    assert det.family.prompt("a cat") == "<CAPTION_TO_PHRASE_GROUNDING>a cat" and det.family.prompt("") == "<OD>"
    answer = det.detect(EXAMPLE, "a cat", max_new_tokens=6)
    assert answer.image_size == (320, 240) and isinstance(answer.text, str)
    assert answer.detections == read_answer(answer.text, answer.image_size, "florence2").detections


def test_a_local_qwen2_5_vl_checkpoint_detects_end_to_end_and_reads_boxes_with_its_processor_resizing(tmp_path):
    det = ForeignDetector.load(save_tiny_qwen2_5_vl(tmp_path / "qwen"))
    assert det.family.name == "qwen2_5_vl"
    grammar = det.family.grammar(det.processor)
    assert (grammar.factor, grammar.min_pixels, grammar.max_pixels) == (28, 56 * 56, 28 * 28 * 64)  # this processor's bounds
    answer = det.detect(EXAMPLE, "hình tròn", max_new_tokens=6)
    assert answer.image_size == (320, 240) and isinstance(answer.text, str)
    seen_w, seen_h = grammar.input_size((320, 240))  # what the model saw: a whole model answer in its pixels maps to the image
    full = read_answer(f'[{{"bbox_2d": [0, 0, {seen_w}, {seen_h}], "label": "ảnh"}}]', (320, 240), grammar)
    assert full.detections[0].box == pytest.approx((0, 0, 320, 240))


def test_checkpoints_that_are_not_the_family_are_refused(kosmos2, tmp_path):
    from sphinx_vi.factory import build_from_preset, save_checkpoint

    ours = save_checkpoint(tmp_path / "ours", *build_from_preset("tiny"))
    with pytest.raises(ForeignModelError, match="'sphinx_vi' is not a known grounding family"):
        ForeignDetector.load(ours)
    with pytest.raises(ForeignModelError, match="is a 'kosmos-2' model, not florence2"):
        ForeignDetector.load(kosmos2, family="florence2")
    with pytest.raises(ForeignModelError, match="asked for 'qwen'"):
        ForeignDetector.load(kosmos2, family="qwen")
    with pytest.raises(FileNotFoundError, match="allow_download"):
        ForeignDetector.load(tmp_path / "missing")


def test_the_studio_detects_with_another_grounding_model(kosmos2):
    from apps.studio.core import Studio

    studio = Studio(model="tiny", detector=str(kosmos2))
    assert "detect `kosmos2`" in studio.backends()
    out = studio.detect(EXAMPLE, "hình tròn")  # Detect goes to Kosmos-2; a random one finds nothing, and says so
    assert out.answer.startswith("<grounding><phrase> hình tròn</phrase>") and out.annotated.size == (320, 240)
    assert out.detections == [] and any("Không tìm thấy" in n for n in out.notices)


def test_a_local_internvl_checkpoint_detects_end_to_end_and_its_box_tags_survive_decoding(tmp_path):
    from sphinx_vi.tools.tiny_models import save_tiny_internvl

    det = ForeignDetector.load(save_tiny_internvl(tmp_path / "internvl"))
    assert det.family.name == "internvl" and det.family.dialect == "internvl"
    assert det.family.prompt("con mèo").endswith("describes: <ref>con mèo</ref>")  # InternVL's own grounding prompt
    answer = det.detect(EXAMPLE, "hình tròn", max_new_tokens=6)
    assert answer.image_size == (320, 240) and isinstance(answer.text, str) and "<|im_end|>" not in answer.text
    # its <ref>/<box> are special tokens: an answer that writes them is decoded with them and read in pixels of the image
    tok = det.processor.tokenizer
    ids = tok("<ref>hình tròn</ref><box>[[0, 0, 500, 1000]]</box><|im_end|>", add_special_tokens=False, return_tensors="pt").input_ids
    text = det.family.decode(det.processor, ids, 0)
    assert text == "<ref>hình tròn</ref><box>[[0, 0, 500, 1000]]</box>"
    assert read_answer(text, (320, 240), "internvl").detections[0].box == pytest.approx((0, 0, 160, 240))


def test_a_box_written_without_its_phrase_is_named_after_the_query(tmp_path, monkeypatch):
    """The model's generate is replaced by a fixed continuation (the real processor and tokenizer read it)."""
    import torch

    from sphinx_vi.tools.tiny_models import save_tiny_internvl

    det = ForeignDetector.load(save_tiny_internvl(tmp_path / "internvl"))
    tail = det.processor.tokenizer("<box>[[0, 0, 500, 1000]]</box><|im_end|>", add_special_tokens=False, return_tensors="pt").input_ids
    monkeypatch.setattr(det.model, "generate", lambda input_ids, **kw: torch.cat([input_ids, tail], dim=1))
    answer = det.detect(EXAMPLE, " hình tròn ")
    assert [(d.label, d.box) for d in answer.detections] == [("hình tròn", pytest.approx((0, 0, 160, 240)))]
