"""Guide targets: where each guided position should look, from ids, labels, tokenizer and layout alone."""

import pytest
import torch

from sphinx_vi.data import Sample, SampleEncoder, collate
from sphinx_vi.guidance import AttentionGuide, TargetReader, box_term, coordinate_groups
from sphinx_vi.prompts import find_phrase, task_prompt


def _reader(vi):
    return TargetReader(vi.processor.tokenizer, vi.model.config.image_token_id, vi.model.vision.layout)


def test_targets_guide_every_box_and_point_to_its_own_cells(tiny, chat):
    enc = SampleEncoder(tiny.processor)
    samples = [
        chat("Tìm: hình tròn màu đỏ.", "[0.00,0.00,0.30,0.30]"),  # REC: the answer's box
        chat("Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông màu xanh lá", task="reg"),  # REG: the question's box
        chat("Phát hiện các hình tròn.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
        chat("Các khớp?", "<p>nose</p> [0.10,0.90], <p>left eye</p> [0.90,0.10]", task="keypoints"),
        Sample("t", [{"role": "user", "content": "Xin chào [0.1,0.1,0.2,0.2]"}, {"role": "assistant", "content": "[0.1,0.1,0.2,0.2]"}]),
    ]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    query, focus = _reader(tiny).box(batch["input_ids"], batch["labels"])
    tok = tiny.processor.tokenizer
    boxes = tiny.model.vision.layout.token_boxes()
    image_pos = (batch["input_ids"][0] == tiny.model.config.image_token_id).nonzero().flatten()

    def predicted(b):  # the text of the tokens the guided positions of row b predict
        return tok.decode(batch["input_ids"][b][query[b].nonzero().flatten() + 1])

    def cells(b, text):  # boxes of the cells the query predicting the first token after `text` looks at
        ids = batch["input_ids"][b].tolist()
        q = next(p for p in query[b].nonzero().flatten().tolist() if text in tok.decode(ids[: p + 2]))
        return boxes[focus[b, q, image_pos].nonzero().flatten()]

    assert predicted(0).replace(" ", "") == "[0.00,0.00,0.30,0.30]"  # the box's tokens, not the end of turn
    rec = cells(0, "[")
    assert len(rec) > 0 and (rec[:, 0] < 0.30).all() and (rec[:, 1] < 0.30).all()
    assert len(rec) == int(((boxes[:, 0] < 0.3) & (boxes[:, 1] < 0.3)).sum())  # every token touching the box
    assert "hình vuông" in predicted(1)  # REG: the whole answer
    reg_q = int(query[1].nonzero()[0])
    assert (boxes[focus[1, reg_q, image_pos].nonzero().flatten()][:, 2] > 0.6).all()
    first, second = cells(2, "[0"), cells(2, ";0")
    assert (first[:, 0] < 0.2).all() and (second[:, 2] > 0.7).all()  # each box of a list looks at its own region
    nose, eye = cells(3, "[0"), cells(3, "eye</p> [0")
    assert (nose[:, 1] < 0.9).all() and (nose[:, 3] >= 0.9).all() and (eye[:, 0] <= 0.9).all() and (eye[:, 2] > 0.9).all()
    assert not query[4].any()  # no image: nothing to look at


def test_lead_weight_falls_on_the_positions_that_choose_each_box(tiny, chat):
    """The rows predicting a box's opening and first number (up to its comma) get the lead weight, the rest 1."""
    enc = SampleEncoder(tiny.processor)
    samples = [chat("Tìm: hình tròn màu đỏ.", "[0.00,0.10,0.30,0.30]"),
               chat("Phát hiện.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
               chat("Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông", task="reg")]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    reader = _reader(tiny)
    query, focus = reader.box(batch["input_ids"], batch["labels"], lead_weight=3.0)
    flat, flat_focus = reader.box(batch["input_ids"], batch["labels"])
    tok = tiny.processor.tokenizer
    assert torch.equal(focus, flat_focus) and torch.equal(query > 0, flat > 0) and set(flat.unique().tolist()) == {0.0, 1.0}

    def predicted(b, weight):  # the text the rows of row b with this weight predict
        return tok.decode(batch["input_ids"][b][(query[b] == weight).nonzero().flatten() + 1]).replace(" ", "")

    assert predicted(0, 3.0) == "[0.00," and predicted(0, 1.0) == "0.10,0.30,0.30]"
    assert predicted(1, 3.0) == "[0.00,0.70," and predicted(1, 1.0) == "0.00,0.20,0.20;0.70,0.90,0.90]"  # each box's lead
    assert (query[2] > 0).any() and set(query[2].unique().tolist()) == {0.0, 1.0}  # REG: no box written, no lead
    with pytest.raises(ValueError, match="lead_weight"):
        reader.box(batch["input_ids"], batch["labels"], lead_weight=0.0)


def test_phrase_targets_point_each_box_lead_at_the_phrase_it_grounds(tiny, chat):
    enc = SampleEncoder(tiny.processor)
    rec_q = task_prompt("rec", "vi", expression="hình tròn màu đỏ")
    samples = [
        chat(rec_q, "[0.00,0.00,0.30,0.30]"),  # REC: the question's expression
        chat("Phát hiện các hình tròn.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
        chat("Các khớp?", "<p>nose</p> [0.10,0.90], <p>left eye</p> [0.90,0.10]", task="keypoints"),
        chat("Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông màu xanh lá", task="reg"),  # no box written: no phrase term
        chat("Ở đâu?", "[0.10,0.10,0.40,0.40]"),  # no known prompt, no tagged phrase: nothing to read
    ]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    query, focus = _reader(tiny).phrase(batch["input_ids"], batch["labels"])
    tok = tiny.processor.tokenizer

    def read(b):  # (text each guided row predicts, the phrase text it is pointed at), per guided row
        ids = batch["input_ids"][b]
        return [(tok.decode(ids[q + 1]), tok.decode(ids[focus[b, q]]).strip()) for q in query[b].nonzero().flatten().tolist()]

    rec = read(0)
    assert "".join(t for t, _ in rec).strip() == "[0.00," and {p for _, p in rec} == {"hình tròn màu đỏ"}  # the lead only
    det = read(1)
    assert "".join(t for t, _ in det).strip() == "[0.00,0.70," and {p for _, p in det} == {"hình tròn"}  # both boxes of the list
    assert {p for _, p in read(2)} == {"nose", "left eye"}
    assert not query[3].any() and not query[4].any()
    assert query[0].max() == 1.0  # no lead weight: every guided row is a lead row


def test_degenerate_boxes_and_far_edge_points_never_give_an_infinite_loss(tiny, chat):
    enc = SampleEncoder(tiny.processor)
    samples = [chat("Tìm.", "[0.50,0.10,0.50,0.40]"), chat("Điểm?", "<p>nose</p> [1.00,1.00]", task="keypoints")]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    targets = _reader(tiny).box(batch["input_ids"], batch["labels"])
    query, focus = targets
    assert not query[0].any()  # a zero-width box on a cell edge covers no token
    assert query[1].any() and (focus[1][query[1] > 0].sum(-1) > 0).all()  # the point at 1.0 is in the last cell
    guide = AttentionGuide(tiny.model.language_model, [0], 1, box_term)
    try:
        guide.arm(targets)
        with torch.enable_grad():
            tiny.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
        assert torch.isfinite(guide.pop_loss())
    finally:
        guide.remove()


def test_find_phrase_reads_the_field_a_task_prompt_asks_about():
    text = "[INST] <image>\n" + task_prompt("detect", "en", category="red stars") + " [/INST] ok [INST] " \
        + task_prompt("rec", "vi", expression="hình tròn màu đỏ") + " [/INST]"
    start, end = find_phrase(text)
    assert text[start:end] == "hình tròn màu đỏ"  # the last prompt wins
    assert find_phrase("[INST] What colour is it? [/INST]") is None



def test_coordinate_groups_read_boxes_points_and_lists_from_token_texts():
    pieces = ["<p>", "a", "</p>", " [", "0", ".", "1", ",", "0", ".", "2", ",", "0", ".", "3", ",", "0", ".", "4", ";",
              "0", ".", "5", ",", "0", ".", "6", "]", " x", "[", "2", ",", "0", "]"]
    groups = coordinate_groups(pieces)
    assert [g.values for g in groups] == [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6]]  # [2,0] lies outside [0, 1]: skipped
    assert groups[0].start == 3 and groups[0].lead_end == 8 and groups[1].start == 20 and groups[1].end == 28
