"""Learning runs summarised: mean and range per metric, targets judged on the mean and on every run, bad input named."""

import json

from sphinx_vi.experiments.runs import main


def test_two_runs_give_mean_range_and_target_verdicts(tmp_path):
    a = {"rec_acc50": 0.82, "rec_acc50_baseline": 0.04, "det_f1_50": 0.9, "vqa_acc": 0.7, "text_loss_vs_stage1": 0.4}
    b = {"rec_acc50": 0.78, "rec_acc50_baseline": 0.06, "det_f1_50": 0.86, "vqa_acc": 0.74}  # one metric missing
    paths = []
    for name, r in (("a", a), ("b", b)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    assert main([*map(str, paths), "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "runs.json").read_text())["metrics"]
    rec = m["rec_acc50"]
    assert abs(rec["mean"] - 0.80) < 1e-9 and (rec["min"], rec["max"]) == (0.78, 0.82) and abs(rec["baseline"] - 0.05) < 1e-9
    assert rec["met_on_mean"] and not rec["met_by_every_run"]  # the mean reaches 0.8, the worst run does not
    assert m["det_f1_50"]["met_by_every_run"] and not m["vqa_acc"]["met_on_mean"]
    assert "text_loss_vs_stage1" not in m  # not in every run: not summarised
    md = (tmp_path / "out" / "runs.md").read_text()
    assert "| REC Acc@0.5 | 0.800 | 0.780 – 0.820 | 0.820, 0.780 | 0.050 | yes | ≥ 0.8 | yes / no |" in md
    assert (tmp_path / "out" / "runs.png").stat().st_size > 0 and "(runs.png)" in md


def test_a_metric_below_its_baseline_in_one_run_is_flagged(tmp_path):
    runs = [{"vqa_count_acc": 0.52, "vqa_count_acc_baseline": 0.50}, {"vqa_count_acc": 0.45, "vqa_count_acc_baseline": 0.50}]
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert main([*map(str, paths), "--out", str(tmp_path / "out")]) == 0
    row = json.loads((tmp_path / "out" / "runs.json").read_text())["metrics"]["vqa_count_acc"]
    assert row["above_baseline_every_run"] is False  # the first run is above its baseline, the second is not
    assert "| 0.500 | **no** |" in (tmp_path / "out" / "runs.md").read_text()


def test_an_unreadable_report_is_named_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "eval.json"
    bad.write_text("{not json")
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "not a readable eval.json" in capsys.readouterr().err and not (tmp_path / "out").exists()
