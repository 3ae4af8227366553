"""The claims harness: every variant trained at one budget, shared phases trained once, verdicts from the seeds' spread."""

import json

import pytest

from sphinx_vi.eval.runner import evaluate
from sphinx_vi.experiments.claims import (
    CLAIMS,
    NOT_DECIDED,
    Claim,
    ClaimsConfig,
    Variant,
    run,
    train_variant,
    verdict,
    worlds,
)
from sphinx_vi.experiments.learn import generator_for


def _claim(metric="rec_acc50"):
    return Claim("x", "paper", "A beats B.", (Variant("A"), Variant("B")), better="A", metric=metric)


def test_a_verdict_needs_every_seed_to_agree_to_hold_and_losses_count_downwards():
    assert verdict(_claim(), {"A": [0.6, 0.7], "B": [0.4, 0.5]}) == "holds"
    assert verdict(_claim(), {"A": [0.45, 0.8], "B": [0.5, 0.55]}) == "holds on the mean"
    assert verdict(_claim(), {"A": [0.4, 0.5], "B": [0.6, 0.7]}) == "does not hold"
    assert verdict(_claim("text_loss"), {"A": [0.3, 0.4], "B": [9.0, 12.0]}) == "holds"


def test_a_comparison_where_no_variant_beats_the_trivial_baseline_decides_nothing():
    assert verdict(_claim(), {"A": [0.01, 0.03], "B": [0.0, 0.02]}, baseline=0.04) == NOT_DECIDED
    assert verdict(_claim(), {"A": [0.05, 0.07], "B": [0.0, 0.02]}, baseline=0.04) == "holds"  # one that learned decides
    assert verdict(_claim(), {"A": [0.01, 0.03], "B": [0.0, 0.02]}) == "holds on the mean"  # no baseline (a loss)


def test_every_claim_names_its_winner_among_its_variants():
    for c in CLAIMS:
        names = [v.name for v in c.variants]
        assert c.better in names and len(set(names)) == len(names) >= 2, c.key


def test_claims_run_at_toy_scale_share_phases_and_resume_without_retraining(tmp_path):
    cfg = ClaimsConfig(tmp_path / "out", tmp_path / "work", claims=("text_stage2", "subimages"), seeds=(0, 1), train_images=24,
                       heldout_images=6, eval_limit=2, stage0_steps=1, stage1_steps=1, stage2_steps=1)
    out = run(cfg)
    stage2_runs = sorted(p.name for p in (tmp_path / "work").glob("stage2-*"))
    # text on (= the preset's K=1), text off, K=2: three stage-2 variants, two seeds each
    assert len(stage2_runs) == 6 and len(list((tmp_path / "work").glob("stage0-*"))) == 4
    saved = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert saved == json.loads(json.dumps(out)) and set(saved["claims"]) == {"text_stage2", "subimages"}
    sub = saved["claims"]["subimages"]
    assert sub["heldout"] == "small_objects" and sub["verdict"] in ("holds", "holds on the mean", "does not hold", NOT_DECIDED)
    assert 0.0 <= sub["baseline"] <= 1.0 and saved["claims"]["text_stage2"]["baseline"] is None  # losses have no trivial baseline
    assert sub["variants"]["K=2"]["rec_acc50"]["n"] == 2 and len(sub["variants"]["K=2"]["rec_acc50"]["seeds"]) == 2
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "| claim | the seed says | we measured | verdict |" in md and "text_stage2" in md
    assert (tmp_path / "out" / "claim_subimages.png").stat().st_size > 0
    before = {p: p.stat().st_mtime for p in (tmp_path / "work").glob("stage*/done.json")}
    run(cfg)  # everything is there: nothing is trained again
    assert {p: p.stat().st_mtime for p in (tmp_path / "work").glob("stage*/done.json")} == before


def test_text_in_stage_1_is_decided_on_the_merged_stage_1_models_language_with_the_final_model_beside_it(tmp_path):
    cfg = ClaimsConfig(tmp_path / "out", tmp_path / "work", claims=("text_stage1",), seeds=(0,), train_images=24,
                       heldout_images=6, eval_limit=2, stage0_steps=1, stage1_steps=1, stage2_steps=1)
    got = run(cfg)["claims"]["text_stage1"]
    assert got["metric"] == "stage1_text_loss" and list(got["variants"]["text off in stage 1"])[:2] == ["stage1_text_loss", "text_loss"]
    claim = next(c for c in CLAIMS if c.key == "text_stage1")
    models = train_variant(cfg, claim.variants[1], 0, worlds(cfg)["train"])  # trained already: only looked up
    heldout = worlds(cfg)["heldout"]
    for stage, key in ((models.stage1, "stage1_text_loss"), (models.stage2, "text_loss")):
        direct = evaluate(generator_for(stage), heldout, limit=2, tasks=[])["text_loss"]
        assert got["variants"]["text off in stage 1"][key]["seeds"] == [pytest.approx(direct)]


def test_an_unknown_claim_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown claim"):
        run(ClaimsConfig(tmp_path / "o", tmp_path / "w", claims=("nope",)))


def test_seeds_train_in_parallel_workers_and_a_later_claim_joins_the_report_at_the_same_budget(tmp_path):
    toy = dict(seeds=(0, 1), train_images=24, heldout_images=6, eval_limit=2, stage0_steps=1, stage1_steps=1, stage2_steps=1)
    first = run(ClaimsConfig(tmp_path / "out", tmp_path / "work", claims=("text_stage2",), jobs=2, **toy))
    assert {p.name for p in (tmp_path / "work" / "per_seed").iterdir()} == {"seed-0", "seed-1"}  # one worker per seed
    assert all("[claims] text_stage2" in (tmp_path / "work" / f"seed-{s}.log").read_text() for s in (0, 1))
    assert first["claims"]["text_stage2"]["variants"]["text off in stage 2"]["text_loss"]["n"] == 2
    trained = {p: p.stat().st_mtime for p in (tmp_path / "work").glob("stage*/done.json")}
    both = run(ClaimsConfig(tmp_path / "out", tmp_path / "work", claims=("lora",), **toy))
    assert list(both["claims"]) == ["text_stage2", "lora"] and both["claims"]["text_stage2"] == first["claims"]["text_stage2"]
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "--claims text_stage2,lora" in md and "## lora" in md and "## text_stage2" in md
    assert f"--work {tmp_path / 'work'} --seeds 0 1 --jobs 1" in md and "--eval-limit 2" in md  # the command as run
    assert all(trained[p] == p.stat().st_mtime for p in trained)  # the shared phases were reused, not retrained
    other = run(ClaimsConfig(tmp_path / "out", tmp_path / "work", claims=("lora",), **{**toy, "eval_limit": 3}))
    assert list(other["claims"]) == ["lora"]  # measured at another budget: the old claims are not mixed in
