import json

import numpy as np
import pytest
from PIL import Image

from sphinx_vi import Detection, ImageError, PromptTooLongError, SphinxVi
from sphinx_vi.cli import main as cli_main
from sphinx_vi.prompts import detect_language, task_prompt

EXAMPLE = "sphinx_vi/assets/examples/shapes.png"


def test_public_imports():
    import sphinx_vi

    assert sphinx_vi.SphinxVi is SphinxVi and sphinx_vi.Detection is Detection
    from sphinx_vi.generation import Generator

    assert sphinx_vi.Generator is Generator and set(sphinx_vi.__all__) <= set(dir(sphinx_vi))


def test_chat_accepts_paths_pil_and_arrays(tiny):
    rgba = np.zeros((30, 50, 4), np.uint8)
    answers = [
        tiny.chat(EXAMPLE, "Có gì trong ảnh?", max_new_tokens=4),
        tiny.chat(Image.open(EXAMPLE).convert("L"), "What is in the image?", max_new_tokens=4),
        tiny.chat(rgba, "Có gì?", max_new_tokens=4),
    ]
    assert all(isinstance(a, str) for a in answers)


def test_batches_return_lists_and_equal_the_single_answers(tiny):
    single = tiny.chat(EXAMPLE, "Có gì trong ảnh?", max_new_tokens=5)
    batch = tiny.chat([EXAMPLE, np.zeros((20, 60, 3), np.uint8)], "Có gì trong ảnh?", max_new_tokens=5)
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0] == single  # left padding does not change the answer


def test_history_is_part_of_the_prompt(tiny):
    texts = []
    original = tiny.processor.apply_chat_template
    tiny.processor.apply_chat_template = lambda m, **k: texts.append(original(m, **k)) or texts[-1]
    try:
        tiny.chat(EXAMPLE, "Còn gì nữa?", history=[("Có gì trong ảnh?", "Một hình tròn.")], max_new_tokens=2)
    finally:
        tiny.processor.apply_chat_template = original
    assert texts[0].count("<image>") == 1 and "Một hình tròn." in texts[0] and texts[0].endswith("Còn gì nữa? [/INST]")


def _answering(tiny, monkeypatch, answer):
    monkeypatch.setattr(tiny.generator, "answer", lambda images, prompts, history, **g: [answer] * len(images))


def test_detect_ground_keypoints_parse_the_answer_into_pixels(tiny, monkeypatch):
    _w, _h = Image.open(EXAMPLE).size  # 320x240: 40 px of padding top and bottom
    _answering(tiny, monkeypatch, "<p>hình tròn</p> [0.10,0.25,0.30,0.45;0.101,0.25,0.30,0.45] <p>ô</p> [0.5,0.5,0.6,0.6]")
    dets = tiny.detect(EXAMPLE, "hình tròn")
    assert len(dets) == 2  # the near-duplicate is folded
    assert dets[0].box == pytest.approx((32, 40, 96, 104))
    found = tiny.ground(EXAMPLE, "hình tròn màu đỏ")
    assert found.label == "hình tròn màu đỏ" and found.box == pytest.approx((32, 40, 96, 104))
    _answering(tiny, monkeypatch, "<p>person</p> [0.1,0.2,0.5,0.9] <p>nose</p> [0.3,0.3], <p>left eye</p> [0.31,0.29]")
    (person,) = tiny.keypoints(EXAMPLE, box=(10, 10, 100, 200))
    assert set(person.points) == {"nose", "left eye"} and person.box is not None
    assert tiny.detect([EXAMPLE, EXAMPLE], "x")[1][0].box is not None


def test_malformed_answers_give_empty_results_and_boxes_stay_inside(tiny, monkeypatch):
    _answering(tiny, monkeypatch, "[[[ <p>x</p> [0.5,-0.05,1.08,0.7] [0.1,0.1] garbage [1,2,3")
    w, h = Image.open(EXAMPLE).size
    for det in tiny.detect(EXAMPLE, "x"):
        if det.box:
            x1, y1, x2, y2 = det.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    _answering(tiny, monkeypatch, "Tôi không thấy gì.")
    assert tiny.detect(EXAMPLE, "x") == [] and tiny.ground(EXAMPLE, "x") is None and tiny.keypoints(EXAMPLE) == []


def test_prompt_longer_than_the_context_is_refused(tiny):
    with pytest.raises(PromptTooLongError, match=r"but the model's context is 2048"):
        tiny.chat(EXAMPLE, "rất dài " * 3000)


def test_bad_images_raise_image_errors_naming_the_file(tiny, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        tiny.detect(bad, "x")


def test_save_and_reload_answers_the_same(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    again = SphinxVi.from_pretrained(tmp_path / "m")
    assert again.chat(EXAMPLE, "Có gì?", max_new_tokens=6) == tiny.chat(EXAMPLE, "Có gì?", max_new_tokens=6)
    with pytest.raises(FileNotFoundError, match="not a sphinx_vi checkpoint"):
        SphinxVi.from_pretrained(tmp_path)
    with pytest.raises(KeyError, match="unknown preset 'huge'"):
        SphinxVi.from_preset("huge")


def test_prompts_in_both_languages():
    assert detect_language("chiếc xe màu đỏ") == "vi" and detect_language("the red car") == "en"
    assert task_prompt("detect", category="người") == "Phát hiện tất cả người có trong ảnh."
    assert task_prompt("rec", "en", expression="the dog").startswith("Please provide the bounding box coordinate")
    with pytest.raises(KeyError):
        task_prompt("nope")


def test_cli_detect_prints_json(capsys):
    assert cli_main(["detect", "--model", "tiny", "--image", EXAMPLE, "hình tròn", "--max-new-tokens", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["query"] == "hình tròn" and isinstance(report["detections"], list) and "answer" in report


def test_cli_reports_bad_input_without_a_traceback(capsys, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert cli_main(["chat", "--image", str(empty), "hi"]) == 2
    assert "empty.png: file is empty" in capsys.readouterr().err
    assert cli_main(["chat", "--model", "nowhere", "--image", EXAMPLE, "hi"]) == 2


def test_ask_returns_text_detections_and_warnings(tiny, monkeypatch):
    _answering(tiny, monkeypatch, "<p>a</p> [0.1,0.3,0.2,0.4] <p>b</p> [0.1,zz]")
    answer = tiny.ask(EXAMPLE, "Phát hiện tất cả.")
    assert answer.text.startswith("<p>a</p>") and answer.image_size == (320, 240)
    assert [d.label for d in answer.detections] == ["a"] and len(answer.warnings) == 1
