"""COCO instances and person keypoints → detection, REC-style and pose samples (via pycocotools)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from pycocotools.coco import COCO

from ...grounding import COCO_KEYPOINTS, format_box, format_boxes, format_point
from ...prompts import Lang, task_prompt
from ...text.tokens import IMAGE_TOKEN
from ..samples import LoadReport, LoadResult, Sample
from .common import check_image


def _coco(path: Path) -> COCO:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(path))


def _open(path: str | Path, image_root: str | Path | None) -> tuple[COCO, Path, LoadReport]:
    """The indexed file, where its images are (default: the folder above its own), and a fresh report."""
    path = Path(path)
    return _coco(path), (Path(image_root) if image_root is not None else path.parent.parent), LoadReport(str(path))


def _xyxy(bbox) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return x, y, x + w, y + h


def _inside(box, w: int, h: int) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= w + 0.5 and 0 <= y1 < y2 <= h + 0.5


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}, {"role": "assistant", "content": answer}]


def _image_ok(coco: COCO, img_id: int, root: Path, report: LoadReport, check_images: bool):
    info = coco.imgs[img_id]
    path = root / info["file_name"]
    if check_images:
        problem, _ = check_image(path)
        if problem:
            report.skip(problem, info["file_name"])
            return None
    return info, path


def annotation_target(coco: COCO, ann: dict, root: Path, report: LoadReport, check_images: bool, where: str):
    """(image path, (w, h), box xyxy) of an annotation, or None after reporting why it is unusable."""
    ok = _image_ok(coco, ann["image_id"], root, report, check_images)
    if ok is None:
        return None
    info, image = ok
    size = (info["width"], info["height"])
    box = _xyxy(ann["bbox"])
    if not _inside(box, *size):
        report.skip("box outside the image", where)
        return None
    return image, size, box


def load_coco_instances(
    path: str | Path, image_root: str | Path | None = None, lang: Lang = "en",
    names: dict[str, str] | None = None, check_images: bool = True,
) -> LoadResult:
    """Per image: one detection sample per category present, one REC sample per object alone in its category.

    `names` maps category names to the words used in prompts (e.g. Vietnamese translations).
    """
    coco, root, report = _open(path, image_root)
    samples: list[Sample] = []
    for img_id in sorted(coco.imgs):
        report.total += 1
        ok = _image_ok(coco, img_id, root, report, check_images)
        if ok is None:
            continue
        info, image = ok
        size = (info["width"], info["height"])
        anns = [a for a in coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        bad = [a for a in anns if not _inside(_xyxy(a["bbox"]), *size)]
        if bad:
            report.skip("box outside the image", f"{info['file_name']} ann {bad[0]['id']}")
            continue
        by_cat: dict[int, list[dict]] = {}
        for a in anns:
            by_cat.setdefault(a["category_id"], []).append(a)
        for cat_id, group in sorted(by_cat.items()):
            name = coco.cats[cat_id]["name"]
            word = (names or {}).get(name, name)
            boxes = [_xyxy(a["bbox"]) for a in group]
            q = task_prompt("detect", lang, category=word)
            samples.append(Sample(f"coco-{img_id}-det-{cat_id}", _chat(q, f"<p>{word}</p> {format_boxes(boxes, size)}"), [image], "detection", lang))
            if len(group) == 1:
                q = task_prompt("rec", lang, expression=(f"the {word}" if lang == "en" else word))
                samples.append(Sample(f"coco-{img_id}-rec-{cat_id}", _chat(q, format_box(boxes[0], size)), [image], "rec", lang))
        report.loaded += 1
    return LoadResult(samples, report)


def load_coco_keypoints(
    path: str | Path, image_root: str | Path | None = None, lang: Lang = "en", check_images: bool = True
) -> LoadResult:
    """One pose sample per annotated person: the prompt gives the box, the answer its labelled keypoints."""
    coco, root, report = _open(path, image_root)
    samples: list[Sample] = []
    for ann_id in sorted(coco.anns):
        ann = coco.anns[ann_id]
        report.total += 1
        kps = ann.get("keypoints")
        if not kps or len(kps) != 3 * len(COCO_KEYPOINTS) or not ann.get("num_keypoints", 1):
            report.skip("no keypoints", f"ann {ann_id}")
            continue
        target = annotation_target(coco, ann, root, report, check_images, f"ann {ann_id}")
        if target is None:
            continue
        image, size, box = target
        points = [
            f"<p>{name}</p> {format_point((kps[3 * i], kps[3 * i + 1]), size)}"
            for i, name in enumerate(COCO_KEYPOINTS)
            if kps[3 * i + 2] > 0
        ]
        q = task_prompt("keypoints_box", lang, box=format_box(box, size))
        samples.append(Sample(f"coco-kp-{ann_id}", _chat(q, ", ".join(points)), [image], "keypoints", lang))
        report.loaded += 1
    return LoadResult(samples, report)
