"""lmms-eval: the `sphinx_vi` model adapter and the local held-out tasks, against `python -m sphinx_vi.eval`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sphinx_vi.data.world.generate import synthesize
from sphinx_vi.data.world.shapes import WorldConfig
from sphinx_vi.eval.lmms_tasks import build_tasks, process_rec, process_vqa
from sphinx_vi.eval.runner import evaluate, load_task
from sphinx_vi.factory import load_model
from sphinx_vi.generation import Generator

LIMIT, BATCH = 16, 8


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout")
    synthesize(out, 12, seed=1, config=WorldConfig(), progress=False)
    return out


def _lmms_eval(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cli = Path(sys.executable).parent / "lmms-eval"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_lmms_eval_cli_scores_the_local_tasks_as_sphinx_vi_eval_does(heldout, tmp_path):
    counts = build_tasks(heldout, tmp_path / "tasks", limit=LIMIT)
    assert counts == {"sphinx_vi_rec": LIMIT, "sphinx_vi_vqa": LIMIT}
    proc = _lmms_eval(["--model", "sphinx_vi", "--model_args", "pretrained=tiny-shapes", "--batch_size", str(BATCH),
                       "--tasks", "sphinx_vi_rec,sphinx_vi_vqa", "--include_path", str(tmp_path / "tasks"),
                       "--output_path", str(tmp_path / "out"), "--log_samples"], tmp_path)
    results = list((tmp_path / "out").rglob("*_results.json"))  # lmms-eval exits 0 even when evaluation failed
    assert results, proc.stdout[-2000:] + proc.stderr[-3000:]
    scores = json.loads(results[0].read_text())["results"]

    ours = evaluate(Generator(*load_model("tiny-shapes")), heldout, LIMIT, ["rec", "vqa"], BATCH)
    for task, metric in (("rec", "rec_acc50"), ("rec", "rec_acc30"), ("rec", "rec_miou"), ("vqa", "vqa_acc")):
        assert scores[f"sphinx_vi_{task}"][f"{metric},none"] == pytest.approx(ours[metric], abs=1e-9), metric
    assert 0.0 < ours["rec_acc50"] < 1.0  # a score that could differ, not a degenerate one

    # answer by answer: lmms-eval's logged responses are the runner's answers
    logged = next((tmp_path / "out").rglob("*_samples_sphinx_vi_rec.jsonl")).read_text().splitlines()
    by_doc = {row["doc_id"]: row["filtered_resps"] for row in map(json.loads, logged)}
    runner = [r.answer for r in ours["_rec_results"]]
    assert [by_doc[i] for i in range(LIMIT)] == runner


def test_unknown_model_args_are_named(tmp_path):
    from sphinx_vi.eval.lmms_model import SphinxViLmms

    with pytest.raises(ValueError, match="unknown model_args temprature"):
        SphinxViLmms(pretrained="tiny-shapes", temprature=0.5)


def test_the_adapter_adds_image_placeholders_cuts_at_until_and_refuses_loglikelihood(heldout):
    from lmms_eval.api.instance import Instance

    from sphinx_vi.eval.lmms_model import SphinxViLmms, UnsupportedRequestError
    from sphinx_vi.eval.lmms_tasks import doc_to_visual

    lm = SphinxViLmms(pretrained="tiny-shapes", batch_size=2)
    sample = load_task(heldout, "vqa", 1)[0]
    doc = {"image": str(sample.images[0])}
    lm.task_dict = {"t": {"test": [doc]}}
    question = sample.messages[0]["content"].replace("<image>\n", "")  # as most lmms-eval tasks write it
    assert lm._conversation(question, 1)[0]["content"] == "<image>\n" + question

    def request(until):
        args = (question, {"max_new_tokens": 12, "until": until}, doc_to_visual, 0, "t", "test")
        return Instance("generate_until", args, 0, {"task": "t", "doc_id": 0, "repeats": 1})

    plain, also = lm.generate_until([request([]), request("")])  # two requests, one batch; empty stops are ignored
    assert plain and also == plain  # the model answers something, the same way twice
    cut, = lm.generate_until([request([plain])])
    assert cut == ""  # everything from the stop string on is cut
    with pytest.raises(UnsupportedRequestError, match="generate_until"):
        lm.loglikelihood([request([])])


def test_task_scorers_on_hand_made_answers():
    doc = {"width": 100, "height": 100, "answer": "[0.10,0.10,0.50,0.50]"}
    assert process_rec(doc, ["[0.10,0.10,0.50,0.50]"]) == {"rec_acc50": 1.0, "rec_acc30": 1.0, "rec_miou": pytest.approx(1.0)}
    half = process_rec(doc, ["[0.10,0.10,0.50,0.30]"])  # half the box: IoU 0.5
    assert half["rec_acc50"] == 1.0 and half["rec_miou"] == pytest.approx(0.5, abs=0.01)
    for hostile in ("", "[[[", "không có", "[0.9,0.9,0.1" * 10_000):
        assert process_rec(doc, [hostile]) == {"rec_acc50": 0.0, "rec_acc30": 0.0, "rec_miou": 0.0}
    assert process_vqa({"answer": "Hai"}, ["hai."]) == {"vqa_acc": 1.0}
    assert process_vqa({"answer": "2"}, ["3"]) == {"vqa_acc": 0.0}


def test_building_tasks_from_a_directory_without_held_out_data_says_what_to_run(tmp_path):
    from sphinx_vi.eval.lmms_tasks import main

    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "tasks")]) == 2
    with pytest.raises(FileNotFoundError, match="sphinx_vi.data synth"):
        build_tasks(tmp_path, tmp_path / "tasks")
