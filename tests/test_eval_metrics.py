import pytest
import torch

from sphinx_vi.eval import metrics as M
from sphinx_vi.eval.runner import format_report


def test_rec_scores_count_unparsed_answers_as_misses():
    gts = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)]
    preds = [(0, 0, 10, 10), (0, 0, 10, 6), (5, 5, 15, 15), None]
    s = M.rec_scores(preds, gts)
    assert s["acc50"] == pytest.approx(0.5) and s["acc30"] == pytest.approx(0.5)
    assert s["parse_rate"] == 0.75
    assert s["miou"] == pytest.approx((1 + 0.6 + 25 / 175) / 4)


def test_best_constant_box():
    gts = [(0, 0, 10, 10)] * 3 + [(50, 50, 60, 60)]
    box, acc = M.best_constant_box(gts)
    assert acc == 0.75 and tuple(box) == (0, 0, 10, 10)


def test_detection_prf_and_coco_ap():
    gts = [[(0, 0, 10, 10), (20, 20, 30, 30)], [], [(5, 5, 9, 9)]]
    preds = [[(0, 0, 10, 10)], [(1, 1, 2, 2)], [(5, 5, 9, 9)]]
    prf = M.detection_prf(preds, gts)
    assert prf["precision"] == pytest.approx(2 / 3) and prf["recall"] == pytest.approx(2 / 3)
    perfect = M.coco_box_ap(gts, gts, ["a", "a", "b"], [(100, 100)] * 3)
    assert perfect["ap"] == pytest.approx(1.0) and perfect["ap50"] == pytest.approx(1.0)
    assert M.coco_box_ap(preds, gts, ["a", "a", "b"], [(100, 100)] * 3)["ap"] < 1.0


def test_keypoint_metrics():
    box = (0, 0, 100, 100)
    gt = {"nose": (50.0, 10.0), "left hip": (60.0, 60.0)}
    assert M.pck([gt], [gt], [box]) == 1.0
    assert M.pck([{"nose": (50.0, 25.0)}], [gt], [box]) == 0.0
    assert M.keypoint_oks_ap([gt], [gt], [box], [(100, 100)])["ap"] == pytest.approx(1.0)
    far = {"nose": (90.0, 90.0), "left hip": (5.0, 5.0)}
    assert M.keypoint_oks_ap([far], [gt], [box], [(100, 100)])["ap"] == pytest.approx(0.0)
    base = M.mean_pose_baseline([gt, gt], [box, (0, 0, 50, 50)])
    assert base[1]["nose"] == pytest.approx((37.5, 7.5))  # mean of (0.5, 0.1) and (1.0, 0.2) of the box


def test_vqa_accuracy_and_majority_baseline():
    assert M.vqa_accuracy(["Đỏ.", "2", "blue"], ["đỏ", "2", "red"]) == pytest.approx(2 / 3)
    qs = ["How many?"] * 3 + ["What colour?"] * 2
    assert M.vqa_majority_baseline(qs, ["1", "1", "2", "red", "red"]) == pytest.approx(4 / 5)


def test_report_table():
    table = format_report({"rec_acc50": 0.7, "rec_acc50_baseline": 0.1, "text_loss": 2.5})
    assert "REC Acc@0.5" in table and "0.700" in table and "0.100" in table


def test_feature_spread_reports_each_tower_and_the_visual_tokens(tiny):
    from pathlib import Path

    from sphinx_vi.eval.diagnose import feature_spread

    images = sorted(Path("sphinx_vi/assets/examples").glob("*.png"))[:3]
    spread = feature_spread(tiny.generator, images)
    assert set(spread) == {"tower.clip_convnext", "tower.clip_vit", "tower.dinov2", "tower.siglip", "visual_tokens"}
    assert all(0 < s["ratio"] <= 1.5 for s in spread.values())  # random towers: features differ between images


def test_phrase_sensitivity_compares_two_questions_about_one_image(tmp_path):
    from sphinx_vi import SphinxVi
    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.eval.diagnose import phrase_sensitivity

    synthesize(tmp_path, 8, seed=4, tasks=["rec"], progress=False)
    vi = SphinxVi.from_pretrained("tiny-shapes")
    r = phrase_sensitivity(vi.generator, tmp_path / "llava" / "rec.json", tmp_path, pairs=3)
    assert r["pairs"] == 3 and 1 <= r["answered_pairs"] <= 3  # the embedded model answers with boxes
    assert 0.0 <= r["identical_answers"] <= 1.0
    assert r["target_centre_distance_px"] > 0  # two different objects were asked about


def test_answer_token_loss_lists_every_rec_answer_position(tmp_path, tiny):
    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.eval.diagnose import answer_token_loss

    synthesize(tmp_path, 4, seed=5, tasks=["rec"], progress=False)
    rows = answer_token_loss(tiny.generator, tmp_path / "llava" / "rec.json", tmp_path, limit=6, batch=4)
    tokens = "".join(r["token"] for r in rows)
    assert tokens.strip().startswith("[0.") and "]" in tokens  # the box, spelt token by token, then the end of turn
    assert [r["position"] for r in rows] == list(range(len(rows)))
    assert all(r["loss"] > 0 for r in rows)  # an untrained model is uncertain everywhere


def test_rec_outcomes_classify_every_answer_and_attention_is_split_by_outcome(tmp_path):
    from sphinx_vi import SphinxVi
    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.eval.diagnose import attention_on_target, phrase_reading, rec_outcomes

    synthesize(tmp_path, 6, seed=6, tasks=["rec", "detection"], progress=False)
    vi = SphinxVi.from_pretrained("tiny-shapes")
    rows = rec_outcomes(vi.generator, tmp_path, limit=8)
    assert len(rows) == 8
    assert {r["outcome"] for r in rows} <= {"hit", "same_kind", "other_kind", "no_object", "unparsed"}
    assert all(1 <= r["objects"] <= 4 for r in rows)
    hits = [True, False] * 4
    kernel = vi.model.language_model.config._attn_implementation
    att = attention_on_target(vi.generator, tmp_path, hits, positions=5, batch=3)
    cfg = vi.model.config.text_config
    for side in ("hit", "miss"):
        mass = torch.tensor(att[side])
        assert mass.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, 5)
        assert ((mass > 0) & (mass <= 1 + 1e-5)).all()  # a share of a softmax over keys that include the target
    assert att["samples"] == {"hit": 4, "miss": 4}
    assert vi.model.language_model.config._attn_implementation == kernel  # the eager kernel was only borrowed
    reading = phrase_reading(vi.generator, tmp_path, hits, batch=3)
    for side in ("hit", "miss"):
        phrase, colour, kind = (torch.tensor(reading[p][side]) for p in ("phrase", "colour", "kind"))
        assert phrase.shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
        assert (colour > 0).all() and (kind > 0).all()  # every expression of the world names a colour and a kind
        assert (colour + kind <= phrase + 1e-5).all() and (phrase <= 1 + 1e-5).all()  # two disjoint parts of the phrase
    assert vi.model.language_model.config._attn_implementation == kernel
    (tmp_path / "coco" / "instances.json").unlink()
    with pytest.raises(ValueError, match="coco/instances.json"):
        rec_outcomes(vi.generator, tmp_path, limit=2)


def test_text_losses_cover_paragraphs_and_instruction_answers(tmp_path, tiny):
    import math

    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.eval.runner import text_loss

    synthesize(tmp_path, 4, seed=7, tasks=["text"], progress=False)
    r = text_loss(tiny, tmp_path, limit=3)
    assert r["text_n"] == 3 and r["text_instruction_n"] == 3
    vocab = tiny.model.get_output_embeddings().weight.shape[0]
    for key in ("text_loss", "text_instruction_loss"):  # a random model: close to a uniform guess, not 0 or inf
        assert 0.5 * math.log(vocab) < r[key] < 2 * math.log(vocab)
    (tmp_path / "text" / "instructions.json").unlink()
    assert set(text_loss(tiny, tmp_path, limit=3)) == {"text_loss", "text_n"}


def test_text_detection_counts_boxes_and_words_apart_and_diacritics_matter():
    gts = [[("XIN", (0, 0, 10, 10)), ("PHỞ", (20, 0, 30, 10))], [("TAXI", (0, 0, 20, 10))]]
    preds = [[("XIN", (0, 0, 10, 10)), ("PHO", (20, 0, 30, 10)), ("BUS", (50, 50, 60, 60))], []]
    s = M.text_detection_scores(preds, gts)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["word_acc"] == pytest.approx(1 / 3)  # PHO is not PHỞ; the missed TAXI counts too
    base = M.constant_labelled_baseline(gts)
    assert len(base) == 2 and all(len(b) == 1 for b in base)


def test_phrase_box_f1_needs_the_phrase_and_the_box():
    gts = [[("Một hình tròn màu đỏ", (0, 0, 10, 10)), ("a red square", (20, 20, 40, 40))]]
    preds = [[("một hình tròn màu đỏ.", (1, 0, 10, 10)), ("a blue square", (20, 20, 40, 40)), ("a red square", (60, 60, 70, 70))]]
    s = M.phrase_box_prf(preds, gts)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 2)
    assert M.phrase_box_prf(gts, gts)["f1"] == 1.0 and M.phrase_box_prf([[]], gts)["f1"] == 0.0


def test_table_cells_are_compared_in_place_and_extra_rows_cost():
    gt = "label | value\nMon | 3\nTue | 5"
    s = M.table_cell_accuracy(["label | value\nMon | 3\nTue | 4\nWed | 1", gt, "not a table"], [gt, gt, gt])
    assert s["cell_acc"] == pytest.approx((3 + 4 + 0) / (6 + 4 + 4)) and s["exact"] == pytest.approx(1 / 3)
    majority = M.majority_table([gt, gt, "nhãn | giá trị\nT2 | 3"])
    assert majority == gt and M.read_table(" a |b \n\n c| d") == [["a", "b"], ["c", "d"]]


def test_region_descriptions_are_read_for_the_first_colour_and_kind_in_either_language():
    colours = {"red": "red", "đỏ": "red", "blue": "blue", "xanh dương": "blue", "xanh lá": "green"}
    kinds = {"circle": "circle", "hình tròn": "circle", "triangle": "triangle", "hình tam giác": "triangle"}
    gts = ["Hình tròn màu đỏ ở phía dưới hình tam giác màu xanh dương."] * 3 + ["The blue triangle."]
    preds = ["The red circle.", "Hình tròn màu xanh dương.", "", "Hình tam giác màu xanh dương"]
    s = M.region_description_scores(preds, gts, colours, kinds)
    assert s["acc"] == pytest.approx(2 / 4) and s["colour_acc"] == pytest.approx(2 / 4) and s["kind_acc"] == pytest.approx(3 / 4)
    assert M.first_term("màu xanh lá và xanh dương", ["xanh", "xanh lá", "xanh dương"]) == "xanh lá"
    assert M.first_term("redcircle", ["red"]) is None  # whole words only
