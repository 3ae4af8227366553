"""Box-guided attention: targets from answers, the recomputed attention, packed rows, and a training run."""

import pytest
import torch
from PIL import Image

from sphinx_vi.data import Sample, SampleEncoder, collate, collate_packed
from sphinx_vi.prompts import find_phrase, task_prompt
from sphinx_vi.train.box_attention import BoxAttention, PhraseAttention
from sphinx_vi.vision.mixed import visual_token_boxes


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 64), (240, 240, 240)).save(path)
    return path


def _chat(image, question, answer, task="rec"):
    return Sample(task, [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": answer}],
                  [image], task=task)


def _guided_forward(model, guide, batch):
    """Targets of `batch`, one forward with the eager kernel (attention maps returned) and the guide's loss."""
    query, focus = guide.targets(batch["input_ids"], batch["labels"])
    before = model.language_model.config._attn_implementation
    model.language_model.set_attn_implementation("eager")
    try:
        guide.use_targets(query, focus)
        with torch.enable_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                        output_attentions=True)
        loss = guide.pop_loss()
    finally:
        guide.remove()
        model.language_model.set_attn_implementation(before)
    return query, focus, out, loss


def test_visual_token_boxes_follow_the_view_layout(tiny):
    vc = tiny.model.vision.config
    boxes = visual_token_boxes(vc)
    g = vc.grid_size // (2 if vc.merge_2x2 else 1)
    assert boxes.shape == (vc.tokens_per_image, 4)
    assert int((~boxes.isnan().any(-1)).sum()) == vc.num_views * g * g  # markers, queries, cls cover no cell
    first = int(vc.image_markers) + vc.qformer_spec.num_queries + int(vc.cls_token)
    torch.testing.assert_close(boxes[first], torch.tensor([0.0, 0.0, 1 / g, 1 / g]))  # global view, top-left
    second_view = vc.tokens_per_view + first  # crop (0, 0) of the K×K grid covers [0, 1/K]²
    torch.testing.assert_close(boxes[second_view], torch.tensor([0.0, 0.0, 1 / (vc.views_grid * g), 1 / (vc.views_grid * g)]))


def test_targets_guide_every_box_and_point_to_its_own_cells(tiny, image):
    enc = SampleEncoder(tiny.processor)
    samples = [
        _chat(image, "Tìm: hình tròn màu đỏ.", "[0.00,0.00,0.30,0.30]"),  # REC: the answer's box
        _chat(image, "Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông màu xanh lá", task="reg"),  # REG: the question's box
        _chat(image, "Phát hiện các hình tròn.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
        _chat(image, "Các khớp?", "<p>nose</p> [0.10,0.90], <p>left eye</p> [0.90,0.10]", task="keypoints"),
        Sample("t", [{"role": "user", "content": "Xin chào [0.1,0.1,0.2,0.2]"}, {"role": "assistant", "content": "[0.1,0.1,0.2,0.2]"}]),
    ]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    guide = BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0, -1], 2)
    try:
        query, focus = guide.targets(batch["input_ids"], batch["labels"])
    finally:
        guide.remove()
    tok = tiny.processor.tokenizer
    boxes = visual_token_boxes(tiny.model.vision.config)
    image_pos = (batch["input_ids"][0] == tiny.model.config.image_token_id).nonzero().flatten()

    def predicted(b):  # the text of the tokens the guided positions of row b predict
        return tok.decode(batch["input_ids"][b][query[b].nonzero().flatten() + 1])

    def cells(b, text):  # boxes of the cells the query predicting the first token after `text` looks at
        ids = batch["input_ids"][b].tolist()
        q = [p for p in query[b].nonzero().flatten().tolist() if text in tok.decode(ids[: p + 2])][0]
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


def test_lead_weight_falls_on_the_positions_that_choose_each_box(tiny, image):
    """The rows predicting a box's opening and first number (up to its comma) get the lead weight, the rest 1."""
    enc = SampleEncoder(tiny.processor)
    samples = [_chat(image, "Tìm: hình tròn màu đỏ.", "[0.00,0.10,0.30,0.30]"),
               _chat(image, "Phát hiện.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
               _chat(image, "Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông", task="reg")]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    guide = BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 1, lead_weight=3.0)
    plain = BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 1)
    try:
        query, focus = guide.targets(batch["input_ids"], batch["labels"])
        flat, flat_focus = plain.targets(batch["input_ids"], batch["labels"])
    finally:
        guide.remove(), plain.remove()
    tok = tiny.processor.tokenizer
    assert torch.equal(focus, flat_focus) and torch.equal(query > 0, flat > 0) and set(flat.unique().tolist()) == {0.0, 1.0}

    def predicted(b, weight):  # the text the rows of row b with this weight predict
        return tok.decode(batch["input_ids"][b][(query[b] == weight).nonzero().flatten() + 1]).replace(" ", "")

    assert predicted(0, 3.0) == "[0.00," and predicted(0, 1.0) == "0.10,0.30,0.30]"
    assert predicted(1, 3.0) == "[0.00,0.70," and predicted(1, 1.0) == "0.00,0.20,0.20;0.70,0.90,0.90]"  # each box's lead
    assert (query[2] > 0).any() and set(query[2].unique().tolist()) == {0.0, 1.0}  # REG: no box written, no lead
    with pytest.raises(ValueError, match="lead_weight"):
        BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 1, lead_weight=0.0)


def test_hook_loss_is_minus_log_attention_mass_of_the_real_heads(tiny, image):
    """The hook's recomputed attention equals the model's own (eager, output_attentions) per guided head."""
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    batch = collate([enc(_chat(image, "Tìm: ngôi sao.", "[0.50,0.00,1.00,0.50]")),
                     enc(_chat(image, "Tìm: hình thoi dài hơn.", "[0.00,0.50,0.40,1.00]"))], tiny.processor.tokenizer.pad_token_id)
    guide = BoxAttention(model, tiny.processor.tokenizer, model.config.image_token_id, [1], 3,  # 3 of 4 heads, 2 kv heads
                         lead_weight=2.5)
    query, focus, out, loss = _guided_forward(model, guide, batch)
    probs = out.attentions[1][:, :3]  # (B, 3, L, L)
    b, q = query.nonzero(as_tuple=True)
    mass = (probs[b, :, q] * focus[b, q].unsqueeze(1)).sum(-1)  # (Q, 3)
    expected = -(mass.log().mean(-1) * query[b, q]).sum()  # weighted by the lead weight where it chooses the box
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    assert loss.requires_grad and guide.pop_loss() is None  # consumed; hooks removed


def test_packed_rows_give_the_same_box_loss_as_padded_ones(tiny, image):
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    encoded = [enc(_chat(image, "Tìm: ngôi sao.", "[0.50,0.00,1.00,0.50]")),
               enc(_chat(image, "Vùng [0.1,0.1,0.4,0.4] là gì?", "hình tròn", task="reg"))]
    pad = tiny.processor.tokenizer.pad_token_id
    losses = []
    for batch in (collate(encoded, pad), collate_packed(encoded, pad, capacity=4096)):
        guide = BoxAttention(model, tiny.processor.tokenizer, model.config.image_token_id, [0, 1], 2)
        try:
            query, focus = guide.targets(batch["input_ids"], batch["labels"], batch.get("position_ids"))
            guide.use_targets(query, focus, batch.get("position_ids"))
            inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
            with torch.enable_grad():
                model(**inputs)
            losses.append((int(query.sum()), guide.pop_loss()))
        finally:
            guide.remove()
    assert losses[1][1] is not None and batch["input_ids"].shape[0] == 1  # both samples in one packed row
    assert losses[0][0] == losses[1][0]
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-4, atol=1e-4)


def test_guide_rejects_layers_and_heads_the_model_lacks(tiny):
    with pytest.raises(ValueError, match="2-layer"):
        BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [5], 1)
    with pytest.raises(ValueError, match="box_attention_heads"):
        BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 9)


def test_degenerate_boxes_and_far_edge_points_never_give_an_infinite_loss(tiny, image):
    enc = SampleEncoder(tiny.processor)
    samples = [_chat(image, "Tìm.", "[0.50,0.10,0.50,0.40]"), _chat(image, "Điểm?", "<p>nose</p> [1.00,1.00]", task="keypoints")]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    guide = BoxAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 1)
    try:
        query, focus = guide.targets(batch["input_ids"], batch["labels"])
        assert not query[0].any()  # a zero-width box on a cell edge covers no token
        assert query[1].any() and (focus[1][query[1] > 0].sum(-1) > 0).all()  # the point at 1.0 is in the last cell
        guide.use_targets(query, focus)
        with torch.enable_grad():
            tiny.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
        assert torch.isfinite(guide.pop_loss())
    finally:
        guide.remove()


def test_phrase_targets_point_each_box_lead_at_the_phrase_it_grounds(tiny, image):
    enc = SampleEncoder(tiny.processor)
    rec_q = task_prompt("rec", "vi", expression="hình tròn màu đỏ")
    samples = [
        _chat(image, rec_q, "[0.00,0.00,0.30,0.30]"),  # REC: the question's expression
        _chat(image, "Phát hiện các hình tròn.", "<p>hình tròn</p> [0.00,0.00,0.20,0.20;0.70,0.70,0.90,0.90]", task="detection"),
        _chat(image, "Các khớp?", "<p>nose</p> [0.10,0.90], <p>left eye</p> [0.90,0.10]", task="keypoints"),
        _chat(image, "Mô tả vùng [0.60,0.60,1.00,1.00].", "hình vuông màu xanh lá", task="reg"),  # no box written: no phrase term
        _chat(image, "Ở đâu?", "[0.10,0.10,0.40,0.40]"),  # no known prompt, no tagged phrase: nothing to read
    ]
    batch = collate([enc(s) for s in samples], tiny.processor.tokenizer.pad_token_id)
    guide = PhraseAttention(tiny.model, tiny.processor.tokenizer, tiny.model.config.image_token_id, [0], 2)
    try:
        query, focus = guide.targets(batch["input_ids"], batch["labels"])
    finally:
        guide.remove()
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


def test_phrase_hook_loss_is_minus_mean_log_attention_over_the_phrase(tiny, image):
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    batch = collate([enc(_chat(image, task_prompt("rec", "en", expression="the big star"), "[0.50,0.00,1.00,0.50]")),
                     enc(_chat(image, "Tìm.", "<p>hình thoi</p> [0.00,0.50,0.40,1.00]"))], tiny.processor.tokenizer.pad_token_id)
    guide = PhraseAttention(model, tiny.processor.tokenizer, model.config.image_token_id, [0], 3)
    query, focus, out, loss = _guided_forward(model, guide, batch)
    probs = out.attentions[0][:, :3]  # (B, 3, L, L)
    b, q = query.nonzero(as_tuple=True)
    on = focus[b, q].unsqueeze(1).float()  # (Q, 1, L)
    expected = (-(probs[b, :, q].clamp_min(1e-30).log() * on).sum(-1) / on.sum(-1)).mean(-1).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="phrase_attention_heads"):
        PhraseAttention(model, tiny.processor.tokenizer, model.config.image_token_id, [0], 99)


def test_find_phrase_reads_the_field_a_task_prompt_asks_about():
    text = "[INST] <image>\n" + task_prompt("detect", "en", category="red stars") + " [/INST] ok [INST] " \
        + task_prompt("rec", "vi", expression="hình tròn màu đỏ") + " [/INST]"
    start, end = find_phrase(text)
    assert text[start:end] == "hình tròn màu đỏ"  # the last prompt wins
    assert find_phrase("[INST] What colour is it? [/INST]") is None
