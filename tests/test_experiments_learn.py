"""The learning proof's pipeline end to end at toy scale: every stage runs, the report and eval.json are written."""

import json

from sphinx_vi.experiments.learn import LearnConfig, run


def test_the_learning_pipeline_runs_end_to_end_at_toy_scale(tmp_path, monkeypatch):
    from sphinx_vi.factory import EMBEDDED_MODELS

    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-shapes", tmp_path / "embedded")  # --embed installs here, not over the real one
    result = run(LearnConfig(tmp_path / "report", tmp_path / "work", train_images=40, heldout_images=8, eval_limit=3,
                             stage0_steps=2, stage1_steps=1, stage2_steps=2, ablation_steps=1, embed=True, processes=1))
    saved = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert saved["rec_n"] == 3 and 0.0 <= saved["rec_acc50"] <= 1.0 and saved["stage2_steps"] == 2
    assert set(saved["ablations"]) >= {"stage2_from_merged", "stage2_from_real_only", "stage2_from_synthetic_only",
                                       "stage1_text_loss_heldout"}
    assert saved["stage1_text_loss"] > 0 and saved["text_loss_vs_stage1"] == round(saved["text_loss"] / saved["stage1_text_loss"], 3)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "Language kept" in readme
    assert saved["precision"] == "fp32" and saved["machine"]["cpus"] >= 1  # what the timings were measured on
    assert saved["command"] == (f".venv/bin/python -m sphinx_vi.experiments.learn --out {tmp_path / 'report'} --train-images 40 "
                                "--heldout-images 8 --eval-limit 3 --stage0-steps 2 --stage1-steps 1 --stage2-steps 2 "
                                "--ablation-steps 1 --processes 1 --embed")  # the README names the command that made it
    assert f"Made by `{saved['command']}`" in (tmp_path / "report" / "README.md").read_text()
    assert f"{saved['machine']['cpus']} cores of an {saved['machine']['cpu']}" in readme and ", fp32 (" in readme
    assert result["rec_curve"] and (tmp_path / "report" / "README.md").read_text().startswith("# Proof that it learns")
    recorded = json.loads((tmp_path / "embedded" / "evaluation.json").read_text())  # the studio header shows these
    assert recorded["scores"]["rec_n"] == 3 and recorded["limit"] == 3 and "seed 1" in recorded["data"]
    assert json.loads((tmp_path / "embedded" / "lineage.json").read_text())["stage"] == "stage2"
    for name in ("loss_stage2.png", "rec_examples.png", "rec_curve.png", "metrics_stage0.jsonl"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_the_recorded_command_parses_back_to_the_run_it_names(tmp_path):
    from sphinx_vi.experiments.learn import command, config_from_args, parser

    cfg = LearnConfig(tmp_path / "report", parser().get_default("work"), train_images=40, stage2_steps=9, seed=3,
                      ablations=False, embed=True, processes=1)
    line = command(cfg)
    assert line.startswith(".venv/bin/python -m sphinx_vi.experiments.learn --out ")
    assert "--no-ablations" in line and "--heldout-images" not in line  # defaults are left out
    assert config_from_args(parser().parse_args(line.split()[3:])) == cfg
    assert config_from_args(parser().parse_args([])) == LearnConfig(parser().get_default("out"), parser().get_default("work"))
