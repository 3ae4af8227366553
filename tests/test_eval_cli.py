"""`python -m sphinx_vi.eval` end to end on a small synthetic world, and the REC gallery."""

import json

import pytest
from PIL import Image

from sphinx_vi.eval.__main__ import main as eval_main
from sphinx_vi.eval.gallery import MODEL, TARGET, RecResult, draw_rec_gallery


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sphinx_vi.data.world.generate import synthesize

    path = tmp_path_factory.mktemp("heldout")
    synthesize(path, 12, seed=3, tasks=("rec", "detection", "keypoints", "vqa", "text"), progress=False)  # has people
    return path


def test_eval_cli_scores_every_task_against_its_baseline_and_draws_rec(world, tmp_path, capsys):
    out, gallery = tmp_path / "report.json", tmp_path / "rec.png"
    assert eval_main(["--model", "tiny", "--data", str(world), "--limit", "3", "--out", str(out), "--gallery", str(gallery)]) == 0
    report = json.loads(out.read_text())
    for key in ("rec_acc50", "rec_acc30", "rec_miou", "det_f1_50", "det_ap", "pose_pck", "pose_oks_ap", "vqa_acc"):
        assert 0.0 <= report[key] <= 1.0, key
    for key in ("rec_acc50_baseline", "det_f1_50_baseline", "pose_pck_baseline", "vqa_acc_baseline"):
        assert key in report
    assert report["rec_n"] == report["det_n"] == report["pose_n"] == report["vqa_n"] == 3 and report["text_loss"] > 0
    assert not any(k.startswith("_") for k in report)  # in-memory results stay out of the JSON
    assert report["box_grammar"] is True  # boxes decoded as the API decodes them
    table = capsys.readouterr().out
    assert "REC Acc@0.5" in table and "VQA accuracy" in table and "REC answers parsed" in table
    with Image.open(gallery) as im:
        assert im.size == (4 * 256, 256 + 40)  # 3 results: one row of the 4-column grid


def test_eval_cli_can_decode_without_the_box_grammar(world, tmp_path):
    out = tmp_path / "free.json"
    assert eval_main(["--model", "tiny", "--data", str(world), "--limit", "2", "--tasks", "rec", "--out", str(out),
                      "--no-box-grammar"]) == 0
    report = json.loads(out.read_text())
    assert report["box_grammar"] is False and report["rec_n"] == 2 and "det_n" not in report


def test_eval_cli_missing_data_is_a_clear_error(tmp_path, capsys):
    assert eval_main(["--model", "tiny", "--data", str(tmp_path / "none")]) == 2
    assert "no llava/ folder" in capsys.readouterr().err


def test_gallery_draws_target_and_model_boxes_and_says_when_there_is_none(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (128, 128), (250, 250, 250)).save(path)
    hit = RecResult(str(path), "<image>\nTìm: hình tròn màu đỏ.", "[0.10,0.10,0.50,0.50]", (12.8, 12.8, 64.0, 64.0), (12.8, 12.8, 64.0, 64.0))
    miss = RecResult(str(path), "<image>\nTìm: " + "rất " * 20 + "hình vuông.", "không", None, (70.0, 70.0, 120.0, 120.0))
    assert hit.iou == pytest.approx(1.0) and miss.iou == 0.0
    assert miss.caption.startswith("…") and miss.caption.endswith("hình vuông.") and len(miss.caption) == 32
    sheet = draw_rec_gallery([hit, miss], tmp_path / "g.png", columns=2, cell=128)
    with Image.open(sheet) as im:
        px = im.convert("RGB")
        colours = lambda x0, x1: {px.getpixel((x, y)) for x in range(x0, x1) for y in range(0, 128)}
        assert MODEL in colours(0, 128) and TARGET in colours(0, 128)  # both boxes on the hit
        assert TARGET in colours(128, 256) and MODEL not in colours(128, 256)  # no model box on the miss
    with pytest.raises(ValueError, match="no REC results"):
        draw_rec_gallery([], tmp_path / "none.png")


def test_eval_record_keeps_the_scores_in_the_checkpoint_and_the_studio_header_shows_them(world, tmp_path, capsys):
    import json

    from apps.studio.core import Studio
    from sphinx_vi.factory import build_from_preset, save_checkpoint
    from sphinx_vi.train.lineage import write_lineage

    ckpt = save_checkpoint(tmp_path / "ckpt", *build_from_preset("tiny"))
    write_lineage(ckpt, stage="stage2", steps=120, data="data/world", languages={"vi": 80, "en": 40})
    assert eval_main(["--model", str(ckpt), "--data", str(world), "--limit", "2", "--tasks", "rec", "vqa", "--record"]) == 0
    record = json.loads((ckpt / "evaluation.json").read_text())
    assert record["data"] == str(world) and record["limit"] == 2 and 0.0 <= record["scores"]["rec_acc50"] <= 1.0
    studio = Studio.__new__(Studio)
    studio.t, studio.model_name = __import__("apps.studio.texts", fromlist=["TEXTS"]).TEXTS["en"], str(ckpt)
    card = studio.model_card()
    assert "stage2, 120 steps" in card and "vi 80, en 40" in card
    assert f"REC Acc@0.5 {record['scores']['rec_acc50']:.3f}" in card and "VQA" in card and str(world) in card
    assert eval_main(["--model", "tiny", "--data", str(world), "--record"]) == 2  # a preset has no directory to write into
    assert "--record writes into a checkpoint directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def every_task(tmp_path_factory):
    from sphinx_vi.data.world.generate import synthesize

    path = tmp_path_factory.mktemp("every_task")
    synthesize(path, 60, seed=4, progress=False)  # every scene kind: shapes, people, text, charts
    return path


def test_every_task_scores_one_on_its_own_ground_truth_and_above_its_baseline(every_task):
    """The scorers read the held-out answers' own grammar: the ground truth answered back scores 1 on every
    metric, and each trivial baseline scores below it."""
    from sphinx_vi.eval import runner as R

    def oracle(samples, task):
        return [s.messages[-1]["content"] for s in samples]

    report: dict = {}
    for task, score in R.TASKS.items():
        samples = R.load_task(every_task, task, None)
        assert samples, task
        report.update(score(samples, oracle))
    scored = [(row.label, row.key, row.baseline) for row in R.ROWS if row.baseline is not None]
    assert {key for _, key, _ in scored} <= report.keys()
    for label, key, base in scored:
        assert report[key] == pytest.approx(1.0), label
        assert report[base] < 0.9, (label, report[base])
    assert report["rec_relation_n"] > 0 and report["rec_attribute_n"] > 0
    assert report["rec_relation_n"] + report["rec_attribute_n"] == report["rec_n"]
    assert report["vqa_count_n"] + report["vqa_colour_n"] == report["vqa_n"]
    assert report["reg_colour_acc"] == report["reg_kind_acc"] == 1.0 and report["chart_exact"] == 1.0
