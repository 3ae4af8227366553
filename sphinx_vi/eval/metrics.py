"""Metrics for grounding answers, each with its trivial baseline."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter

import numpy as np

from ..grounding import COCO_KEYPOINTS
from ..grounding.geometry import Box


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) × (m, 4) boxes → (n, m) IoU."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def rec_scores(preds: list[Box | None], gts: list[Box]) -> dict[str, float]:
    """Acc@0.5, Acc@0.3 and mean IoU; an answer without a readable box is a miss (IoU 0)."""
    ious = np.array([iou_matrix(np.array(p), np.array(g))[0, 0] if p is not None else 0.0 for p, g in zip(preds, gts)])
    n = max(1, len(gts))
    return {
        "acc50": float((ious >= 0.5).sum() / n),
        "acc30": float((ious >= 0.3).sum() / n),
        "miou": float(ious.sum() / n),
        "parse_rate": float(sum(p is not None for p in preds) / n),
    }


def best_constant_box(gts: list[Box], threshold: float = 0.5) -> tuple[Box, float]:
    """The single box that, answered to every question, scores the best Acc@threshold (candidates: every GT box and the mean)."""
    g = np.asarray(gts, float).reshape(-1, 4)
    if not len(g):
        return (0.0, 0.0, 0.0, 0.0), 0.0
    candidates = np.vstack([g, g.mean(axis=0, keepdims=True)])
    acc = (iou_matrix(candidates, g) >= threshold).mean(axis=1)
    best = int(acc.argmax())
    return tuple(candidates[best]), float(acc[best])


def match_boxes(pred: list[Box], gt: list[Box], threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU; returns true positives."""
    if not pred or not gt:
        return 0
    m = iou_matrix(np.array(pred), np.array(gt))
    tp = 0
    while m.size and m.max() >= threshold:
        i, j = np.unravel_index(m.argmax(), m.shape)
        tp += 1
        m[i, :] = -1
        m[:, j] = -1
    return tp


def detection_prf(preds: list[list[Box]], gts: list[list[Box]], threshold: float = 0.5) -> dict[str, float]:
    tp = sum(match_boxes(p, g, threshold) for p, g in zip(preds, gts))
    n_pred, n_gt = sum(len(p) for p in preds), sum(len(g) for g in gts)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _xywh(b: Box) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_box_ap(preds: list[list[Box]], gts: list[list[Box]], categories: list[str], sizes: list[tuple[int, int]]) -> dict[str, float]:
    """COCO AP and AP50 through pycocotools; predictions are scored by their order in the answer."""

    cats = sorted(set(categories))
    cat_id = {c: i + 1 for i, c in enumerate(cats)}
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": c} for c, i in cat_id.items()]}
    dets = []
    for img_id, (p, g, c, (w, h)) in enumerate(zip(preds, gts, categories, sizes), start=1):
        gt["images"].append({"id": img_id, "width": w, "height": h})
        for b in g:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img_id, "category_id": cat_id[c],
                                      "bbox": _xywh(b), "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
        for rank, b in enumerate(p):
            dets.append({"image_id": img_id, "category_id": cat_id[c], "bbox": _xywh(b), "score": 1.0 - 0.01 * rank})
    if not gt["annotations"]:
        return {"ap": 0.0, "ap50": 0.0}
    return _coco_eval(gt, dets, "bbox")


def _coco_eval(gt: dict, dets: list[dict], iou_type: str) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not dets:
            return {"ap": 0.0, "ap50": 0.0}
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": float(max(ev.stats[0], 0.0)), "ap50": float(max(ev.stats[1], 0.0))}


def keypoint_oks_ap(preds: list[dict[str, tuple[float, float]]], gts: list[dict[str, tuple[float, float]]],
                    boxes: list[Box], sizes: list[tuple[int, int]]) -> dict[str, float]:
    """OKS AP (pycocotools) of one person per sample; missing predicted keypoints count as absent."""
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": []}]}
    dets = []
    for img_id, (p, g, b, (w, h)) in enumerate(zip(preds, gts, boxes, sizes), start=1):
        gt["images"].append({"id": img_id, "width": w, "height": h})
        flat = [v for n in COCO_KEYPOINTS for v in ((*g[n], 2) if n in g else (0, 0, 0))]
        gt["annotations"].append({"id": img_id, "image_id": img_id, "category_id": 1, "bbox": _xywh(b),
                                  "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0, "keypoints": flat,
                                  "num_keypoints": len(g)})
        if p:
            dets.append({"image_id": img_id, "category_id": 1, "score": 1.0,
                         "keypoints": [v for n in COCO_KEYPOINTS for v in ((*p[n], 1) if n in p else (0, 0, 0))]})
    return _coco_eval(gt, dets, "keypoints")


def pck(preds: list[dict[str, tuple[float, float]]], gts: list[dict[str, tuple[float, float]]], boxes: list[Box], alpha: float = 0.1) -> float:
    """Share of GT keypoints predicted within alpha × the longer side of the person box."""
    hit = total = 0
    for p, g, b in zip(preds, gts, boxes):
        scale = alpha * max(b[2] - b[0], b[3] - b[1])
        for name, (x, y) in g.items():
            total += 1
            if name in p and np.hypot(p[name][0] - x, p[name][1] - y) <= scale:
                hit += 1
    return hit / total if total else 0.0


def mean_pose_baseline(gts: list[dict[str, tuple[float, float]]], boxes: list[Box]) -> list[dict[str, tuple[float, float]]]:
    """The trivial pose predictor: each keypoint at its average position relative to the given box."""
    rel: dict[str, list[tuple[float, float]]] = {}
    for g, b in zip(gts, boxes):
        w, h = max(b[2] - b[0], 1e-6), max(b[3] - b[1], 1e-6)
        for name, (x, y) in g.items():
            rel.setdefault(name, []).append(((x - b[0]) / w, (y - b[1]) / h))
    mean = {n: tuple(np.mean(v, axis=0)) for n, v in rel.items()}
    return [{n: (b[0] + u * (b[2] - b[0]), b[1] + v * (b[3] - b[1])) for n, (u, v) in mean.items()} for b in boxes]


def normalize_answer(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def vqa_accuracy(preds: list[str], gts: list[str]) -> float:
    return sum(normalize_answer(p) == normalize_answer(g) for p, g in zip(preds, gts)) / max(1, len(gts))


def vqa_majority_baseline(questions: list[str], gts: list[str]) -> float:
    """Answer every question of a kind (its text with the object words removed) with that kind's most common answer."""
    groups: dict[str, Counter] = {}
    for q, g in zip(questions, gts):
        kind = ("count" if normalize_answer(g).isdigit() else "other") + ("-vi" if re.search("[àáảãạăâđêôơư]", q.lower()) else "-en")
        groups.setdefault(kind, Counter())[normalize_answer(g)] += 1
    return sum(c.most_common(1)[0][1] for c in groups.values()) / max(1, len(gts))
