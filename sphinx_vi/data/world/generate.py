"""Write the synthetic world to disk in the formats real data comes in (docs/ARCHITECTURE.md, "Data").

    DIR/images/000001.png
    DIR/llava/{rec,reg,detection,vqa,keypoints,ocr,chart,grounded_caption}.json   LLaVA conversations
    DIR/captions/{real,synthetic}.jsonl        caption pairs: short alt-text / dense grounded descriptions
    DIR/coco/instances.json, person_keypoints.json
    DIR/refs/refs.json                         RefCOCO-style referring expressions over coco/instances.json
    DIR/text/paragraphs.jsonl, instructions.json   text-only data
    DIR/manifest.json

Deterministic: the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...grounding.keypoints import COCO_KEYPOINTS, COCO_SKELETON
from ...text.tokens import IMAGE_TOKEN
from . import tasks as T
from .glyphs import draw_chart, draw_words
from .language import KINDS, LANGS
from .people import draw_people, sample_people
from .shapes import WorldConfig, background, draw_shapes, sample_shapes
from .textonly import instruction, paragraph

ALL_TASKS = ("rec", "reg", "detection", "vqa", "keypoints", "ocr", "chart", "caption", "text")
# which kind of image serves which tasks, and how often each kind is drawn
SCENE_TASKS = {
    "shapes": {"rec", "reg", "detection", "vqa", "caption"},
    "people": {"keypoints", "detection"},
    "text": {"ocr"},
    "chart": {"chart"},
}
SCENE_WEIGHTS = {"shapes": 0.6, "people": 0.2, "text": 0.1, "chart": 0.1}
CATEGORIES = [{"id": i + 1, "name": k.en, "supercategory": "shape"} for i, k in enumerate(KINDS)] + [
    {"id": len(KINDS) + 1, "name": "person", "supercategory": "person"}
]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}


def _conversation(question: str, answer: str, with_image: bool = True) -> list[dict[str, str]]:
    human = f"{IMAGE_TOKEN}\n{question}" if with_image else question
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def _dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _dump_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _flat(polygon: list[tuple[float, float]]) -> list[float]:
    return [round(v, 2) for xy in polygon for v in xy]


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


class _Writer:
    """Collects rows of every output file while scenes are generated."""

    def __init__(self, tasks: set[str]) -> None:
        self.tasks = tasks
        self.llava: dict[str, list[dict]] = {}
        self.captions: dict[str, list[dict]] = {"real": [], "synthetic": []}
        self.images: list[dict] = []
        self.instances: list[dict] = []
        self.keypoints: list[dict] = []
        self.refs: list[dict] = []

    def add(self, task: str, image: str, lang: str, question: str, answer: str) -> None:
        if task not in self.tasks and not (task == "grounded_caption" and "caption" in self.tasks):
            return
        rows = self.llava.setdefault(task, [])
        rows.append({"id": f"{task}-{len(rows):07d}-{lang}", "image": image, "task": task, "lang": lang,
                     "conversations": _conversation(question, answer)})

    def annotation(self, image_id: int, category: str, box, polygon=None, keypoints=None) -> int:
        ann = {"id": len(self.instances) + 1, "image_id": image_id, "category_id": CATEGORY_ID[category],
               "bbox": _xywh(box), "area": round((box[2] - box[0]) * (box[3] - box[1]), 2), "iscrowd": 0,
               "segmentation": [_flat(polygon or [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])])]}
        self.instances.append(ann)
        if keypoints is not None:
            flat = [v for name in COCO_KEYPOINTS for v in (round(keypoints[name][0], 2), round(keypoints[name][1], 2), keypoints[name][2])]
            self.keypoints.append({**ann, "keypoints": flat, "num_keypoints": sum(1 for n in COCO_KEYPOINTS if keypoints[n][2] > 0)})
        return ann["id"]


def _shapes_scene(w: _Writer, rng: random.Random, cfg: WorldConfig, image_id: int, rel: str, out: Path) -> None:
    img = background(rng, cfg)
    shapes = sample_shapes(rng, cfg)
    draw_shapes(img, shapes)
    img.save(out / rel)
    size = img.size
    ann_ids = [w.annotation(image_id, s.kind.en, s.box, s.polygon) for s in shapes]
    query_kind = rng.choice(KINDS) if rng.random() < 0.25 else rng.choice(shapes).kind  # sometimes absent
    attribute_seed, rel_seed, caption_seed = rng.random(), rng.random(), rng.random()
    for lang in LANGS:
        rec, reg = T.rec_and_reg(shapes, size, random.Random(rel_seed), lang)
        for q, a in rec:
            w.add("rec", rel, lang, q, a)
        for q, a in reg:
            w.add("reg", rel, lang, q, a)
        w.add("detection", rel, lang, *T.detection(shapes, size, query_kind, lang))
        w.add("vqa", rel, lang, *T.counting(shapes, query_kind, lang))
        attr = T.attribute(shapes, random.Random(attribute_seed), lang)
        if attr:
            w.add("vqa", rel, lang, *attr)
        if "caption" in w.tasks:
            dense = T.caption_dense(shapes, size, random.Random(caption_seed), lang)
            w.captions["real"].append({"image": rel, "caption": T.caption_real(shapes, lang), "lang": lang})
            w.captions["synthetic"].append({"image": rel, "caption": dense, "lang": lang})
            w.add("grounded_caption", rel, lang, T.task_prompt("grounded_caption", lang), dense)
    if "rec" in w.tasks or "reg" in w.tasks:
        rng_en, rng_vi = random.Random(rel_seed), random.Random(rel_seed)
        for i, s in enumerate(shapes):
            en = T.referring_expression(shapes, i, random.Random(rng_en.random()), "en")
            vi = T.referring_expression(shapes, i, random.Random(rng_vi.random()), "vi")
            if en and vi:
                w.refs.append({"ref_id": len(w.refs) + 1, "ann_id": ann_ids[i], "image_id": image_id, "file_name": rel,
                               "category_id": CATEGORY_ID[s.kind.en], "split": "train",
                               "sentences": [{"sent": en, "lang": "en"}, {"sent": vi, "lang": "vi"}]})


def _people_scene(w: _Writer, rng: random.Random, cfg: WorldConfig, image_id: int, rel: str, out: Path) -> None:
    img = background(rng, cfg)
    people = sample_people(rng, cfg.size, rng.randint(1, 2))
    draw_people(img, people, rng)
    img.save(out / rel)
    for p in people:
        w.annotation(image_id, "person", p.box, keypoints=p.keypoints)
    for lang in LANGS:
        for p in people:
            w.add("keypoints", rel, lang, *T.keypoints(p, img.size, lang))
        w.add("detection", rel, lang, *T.people_detection(people, img.size, lang))


def _text_scene(w: _Writer, rng: random.Random, cfg: WorldConfig, image_id: int, rel: str, out: Path) -> None:
    img = background(rng, cfg)
    words = draw_words(img, rng, rng.randint(1, 3))
    img.save(out / rel)
    for lang in LANGS:
        w.add("ocr", rel, lang, *T.ocr(words, img.size, lang))


def _chart_scene(w: _Writer, rng: random.Random, cfg: WorldConfig, image_id: int, rel: str, out: Path) -> None:
    img = background(rng, WorldConfig(**{**asdict(cfg), "clutter": 0}))
    chart = draw_chart(img, rng)
    img.save(out / rel)
    for lang in LANGS:
        w.add("chart", rel, lang, *T.chart_table(chart, lang))


SCENES = {"shapes": _shapes_scene, "people": _people_scene, "text": _text_scene, "chart": _chart_scene}


def synthesize(out: str | Path, num: int, seed: int = 0, tasks: Iterable[str] = ALL_TASKS,
               config: WorldConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate `num` images (and their annotations) into `out`; returns the manifest."""
    cfg = config or WorldConfig()
    task_set = set(tasks)
    unknown = task_set - set(ALL_TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {', '.join(ALL_TASKS)}")
    if cfg.min_objects < 1 or cfg.max_objects < cfg.min_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {cfg.min_objects}, {cfg.max_objects}")
    if not 0.0 <= cfg.distractor_rate <= 1.0:
        raise ValueError(f"distractor_rate must be in [0, 1], got {cfg.distractor_rate}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    kinds = [k for k, ts in SCENE_TASKS.items() if ts & task_set]
    weights = [SCENE_WEIGHTS[k] for k in kinds]
    w = _Writer(task_set)
    for i in tqdm(range(num), desc="synth", disable=not progress or num < 50):
        rng = random.Random(f"sphinx_vi-{seed}-{i}")
        rel = f"images/{i + 1:06d}.png"
        if kinds:
            kind = rng.choices(kinds, weights)[0]
            w.images.append({"id": i + 1, "file_name": rel, "width": cfg.size, "height": cfg.size, "scene": kind})
            SCENES[kind](w, rng, cfg, i + 1, rel, out)
    for task, rows in sorted(w.llava.items()):
        _dump_json(out / "llava" / f"{task}.json", rows)
    if "caption" in task_set:
        for style, rows in w.captions.items():
            _dump_jsonl(out / "captions" / f"{style}.jsonl", rows)
    if w.images:
        _dump_json(out / "coco" / "instances.json", {"images": w.images, "annotations": w.instances, "categories": CATEGORIES})
    if w.keypoints:
        person = {**next(c for c in CATEGORIES if c["name"] == "person"), "keypoints": [n.replace(" ", "_") for n in COCO_KEYPOINTS],
                  "skeleton": [[COCO_KEYPOINTS.index(a) + 1, COCO_KEYPOINTS.index(b) + 1] for a, b in COCO_SKELETON]}
        people_images = sorted({a["image_id"] for a in w.keypoints})
        _dump_json(out / "coco" / "person_keypoints.json", {
            "images": [im for im in w.images if im["id"] in set(people_images)],
            "annotations": w.keypoints, "categories": [person]})
    if w.refs:
        _dump_json(out / "refs" / "refs.json", w.refs)
    if "text" in task_set:
        trng = random.Random(f"sphinx_vi-text-{seed}")
        _dump_jsonl(out / "text" / "paragraphs.jsonl", ({"text": paragraph(trng)} for _ in range(max(num, 1))))
        pairs = [instruction(trng) for _ in range(max(num, 1))]
        _dump_json(out / "text" / "instructions.json", [
            {"id": f"text-{i:07d}", "task": "text_instruction", "conversations": _conversation(q, a, with_image=False)}
            for i, (q, a) in enumerate(pairs)])
    manifest = {
        "seed": seed, "num_images": num, "tasks": sorted(task_set), "world": asdict(cfg),
        "files": {str(p.relative_to(out)): sum(1 for _ in _rows(p)) for p in sorted(out.rglob("*.json*")) if p.name != "manifest.json"},
    }
    _dump_json(out / "manifest.json", manifest)
    return manifest


def _rows(path: Path):
    if path.suffix == ".jsonl":
        return path.read_text(encoding="utf-8").splitlines()
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("annotations", []) if isinstance(data, dict) else data
