import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from sphinx_vi.data.formats import load_captions, load_coco_instances, load_coco_keypoints, load_llava, load_refs, load_text
from sphinx_vi.data.world.generate import synthesize
from sphinx_vi.data.world.shapes import WorldConfig
from sphinx_vi.grounding import parse
from sphinx_vi.prompts import detect_language

TASKS = ("rec", "reg", "detection", "vqa", "keypoints", "ocr", "chart", "grounded_caption")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    synthesize(out, 60, seed=3, progress=False)
    return out


def test_same_seed_same_bytes_other_seed_other_files(world, tmp_path):
    synthesize(tmp_path / "again", 60, seed=3, progress=False)
    assert _digest(world) == _digest(tmp_path / "again")
    synthesize(tmp_path / "other", 60, seed=4, progress=False)
    other = _digest(tmp_path / "other")
    assert other["images/000001.png"] != _digest(world)["images/000001.png"]


def test_every_task_in_both_languages_with_correct_diacritics(world):
    for task in TASKS:
        rows = json.loads((world / "llava" / f"{task}.json").read_text(encoding="utf-8"))
        langs = Counter(r["lang"] for r in rows)
        assert langs["vi"] == langs["en"] > 0, task
        for r in rows:
            q = r["conversations"][0]["value"]
            if r["lang"] == "vi":
                assert detect_language(q) == "vi", q  # Vietnamese prompts carry their diacritics
    vi_captions = [json.loads(line) for line in (world / "captions" / "real.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any("màu" in c["caption"] for c in vi_captions if c["lang"] == "vi")


def test_every_box_and_point_lies_inside_its_image(world):
    for f in (world / "llava").glob("*.json"):
        for row in json.loads(f.read_text(encoding="utf-8")):
            size = Image.open(world / row["image"]).size
            answer = row["conversations"][1]["value"]
            res = parse(answer + " " + row["conversations"][0]["value"], size)
            assert not res.warnings, (f.name, answer)
            for det in res.detections:
                if det.box:
                    x1, y1, x2, y2 = det.box
                    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
                for x, y in (det.points or {}).values():
                    assert 0 <= x <= size[0] and 0 <= y <= size[1]


def test_coco_files_load_in_pycocotools_and_are_consistent(world):
    from pycocotools.coco import COCO

    inst = COCO(str(world / "coco" / "instances.json"))
    assert inst.getCatIds() and inst.getAnnIds()
    for ann in inst.loadAnns(inst.getAnnIds()):
        img = inst.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert inst.annToMask(ann).sum() > 0
    kp = COCO(str(world / "coco" / "person_keypoints.json"))
    ann = kp.loadAnns(kp.getAnnIds())[0]
    assert len(ann["keypoints"]) == 51 and kp.loadCats(kp.getCatIds())[0]["name"] == "person"
    vis = Counter(v for a in kp.loadAnns(kp.getAnnIds()) for v in a["keypoints"][2::3])
    assert vis[2] > 0 and vis[1] > 0  # visible and occluded keypoints both occur


def test_readers_load_everything_the_world_writes(world):
    results = [
        load_llava(world / "llava" / "rec.json"),
        load_captions(world / "captions" / "synthetic.jsonl"),
        load_text(world / "text" / "paragraphs.jsonl"),
        load_text(world / "text" / "instructions.json"),
        load_coco_instances(world / "coco" / "instances.json"),
        load_coco_keypoints(world / "coco" / "person_keypoints.json"),
        load_refs(world / "refs" / "refs.json", world / "coco" / "instances.json"),
    ]
    for r in results:
        assert r.samples and r.report.bad == 0, r.report.summary()
    kinds = {s.kind for s in results[2].samples}
    assert kinds == {"text"}


def test_referring_expressions_need_the_full_phrase(world):
    rows = json.loads((world / "llava" / "rec.json").read_text(encoding="utf-8"))
    expressions = [r["conversations"][0]["value"] for r in rows if r["lang"] == "en"]
    assert any(" left of " in e or " right of " in e or " above " in e or " below " in e for e in expressions)


def test_knobs_change_the_world(tmp_path):
    synthesize(tmp_path / "one", 20, seed=0, tasks=["rec"], config=WorldConfig(size=96, min_objects=1, max_objects=1), progress=False)
    coco = json.loads((tmp_path / "one" / "coco" / "instances.json").read_text())
    assert Counter(a["image_id"] for a in coco["annotations"]).most_common(1)[0][1] == 1
    assert Image.open(tmp_path / "one" / "images" / "000001.png").size == (96, 96)
    with pytest.raises(ValueError, match="unknown task"):
        synthesize(tmp_path / "x", 1, tasks=["nope"], progress=False)
