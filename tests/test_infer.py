"""Batch inference: folders and data files, resumable after a kill (each prediction once), N processes = 1, COCO results."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sphinx_vi.data.world.generate import synthesize
from sphinx_vi.data.world.shapes import WorldConfig
from sphinx_vi.infer import main, run

EXAMPLES = Path(__file__).resolve().parents[1] / "sphinx_vi" / "assets" / "examples"


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, src in enumerate(sorted(EXAMPLES.glob("*.png")) * 2):
        shutil.copy(src, images / f"{i:02d}_{src.name}")
    return images


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_is_answered_in_item_order(folder, tmp_path):
    out = run("tiny-shapes", folder, "detect", tmp_path / "preds.jsonl", query="hình tròn", batch_size=3, max_new_tokens=24)
    rows = _rows(out)
    assert [r["index"] for r in rows] == list(range(len(list(folder.iterdir()))))
    assert all(r["task"] == "detect" and isinstance(r["detections"], list) and r["image_size"] for r in rows)
    assert not list(tmp_path.glob("preds.jsonl.part-*"))  # merged


def test_a_killed_run_resumes_and_writes_each_prediction_once(folder, tmp_path):
    straight = _rows(run("tiny-shapes", folder, "ground", tmp_path / "a.jsonl", query="hình vuông", batch_size=2, max_new_tokens=24))
    out = tmp_path / "b.jsonl"
    run("tiny-shapes", folder, "ground", out, query="hình vuông", batch_size=2, max_new_tokens=24, stop_after=2)  # killed
    part = tmp_path / "b.jsonl.part-0"
    assert len(part.read_text().splitlines()) == 4 and not out.exists()
    with open(part, "a") as f:
        f.write('{"index": 7, "answer": "half a li')  # the kill cut a line
    resumed = _rows(run("tiny-shapes", folder, "ground", out, query="hình vuông", batch_size=2, max_new_tokens=24))
    assert [r["index"] for r in resumed] == list(range(len(straight)))  # each once, in order
    assert [r["answer"] for r in resumed] == [r["answer"] for r in straight]


def test_two_processes_under_accelerate_launch_write_what_one_writes(folder, tmp_path):
    one = run("tiny-shapes", folder, "detect", tmp_path / "one.jsonl", query="hình tròn", batch_size=2, max_new_tokens=24)
    config = Path(__file__).resolve().parents[1] / "train" / "accelerate" / "cpu_2proc.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", "29541", "-m", "sphinx_vi.infer",
           "--model", "tiny-shapes", "--data", str(folder), "--task", "detect", "--query", "hình tròn", "--batch-size", "2",
           "--max-new-tokens", "24", "--out", str(tmp_path / "two.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(tmp_path / "two.jsonl") == _rows(one)


def test_coco_detection_input_also_writes_coco_results(tmp_path):
    from pycocotools.coco import COCO

    world = tmp_path / "world"
    synthesize(world, 6, seed=3, config=WorldConfig(size=64), tasks=["detection"], progress=False)
    out = run("tiny-shapes", world / "coco" / "instances.json", "detect", tmp_path / "coco.jsonl", batch_size=4, max_new_tokens=48)
    rows = _rows(out)
    assert rows and all(r["id"].startswith("coco-") for r in rows)
    results = json.loads((tmp_path / "coco.coco.json").read_text())
    gt = COCO(str(world / "coco" / "instances.json"))
    if results:  # pycocotools takes them as they are
        assert len(gt.loadRes(str(tmp_path / "coco.coco.json")).getAnnIds()) == len(results)


def test_bad_input_is_named_and_a_broken_image_does_not_stop_the_run(folder, tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nothing"), "--task", "chat", "--prompt", "?", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--data", str(folder), "--task", "chat", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--prompt" in capsys.readouterr().err
    (folder / "zz_broken.png").write_bytes(b"not a png")
    rows = _rows(run("tiny-shapes", folder, "chat", tmp_path / "c.jsonl", prompt="Có gì?", batch_size=4, max_new_tokens=8))
    broken = [r for r in rows if r["image"].endswith("zz_broken.png")]
    assert len(broken) == 1 and "error" in broken[0] and len(rows) == len(list(folder.iterdir()))
