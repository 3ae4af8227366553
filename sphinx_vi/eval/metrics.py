"""Metrics for grounding answers, each with its trivial baseline."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter

import numpy as np

from ..grounding import COCO_KEYPOINTS, Detection
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


def match_pairs(pred: list[Box], gt: list[Box], threshold: float = 0.5, allowed: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU ≥ `threshold`, highest first; `allowed` (n_pred, n_gt) bool masks
    out pairs that may not match (different phrases). Returns (pred index, gt index) pairs."""
    if not pred or not gt:
        return []
    m = iou_matrix(np.array(pred), np.array(gt))
    if allowed is not None:
        m = np.where(allowed, m, -1.0)
    pairs = []
    while m.size and m.max() >= threshold:
        i, j = np.unravel_index(m.argmax(), m.shape)
        pairs.append((int(i), int(j)))
        m[i, :] = -1
        m[:, j] = -1
    return pairs


def match_boxes(pred: list[Box], gt: list[Box], threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU; returns true positives."""
    return len(match_pairs(pred, gt, threshold))


def _prf(tp: int, n_pred: int, n_gt: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def detection_prf(preds: list[list[Box]], gts: list[list[Box]], threshold: float = 0.5) -> dict[str, float]:
    tp = sum(match_boxes(p, g, threshold) for p, g in zip(preds, gts))
    return _prf(tp, sum(len(p) for p in preds), sum(len(g) for g in gts))


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


# --- read text: OCR, grounded captions, chart tables, region descriptions -----------------------------------

Labelled = list[tuple[str, Box]]  # (phrase or word, box) pairs of one answer


def labelled_boxes(detections: list[Detection]) -> Labelled:
    """The (label, box) pairs of parsed detections; detections without a box are left out."""
    return [(d.label, d.box) for d in detections if d.box is not None]


def _same_text(a: str, b: str) -> bool:
    """Exact text, whitespace collapsed: case and Vietnamese diacritics count."""
    return " ".join(a.split()) == " ".join(b.split())


def text_detection_scores(preds: list[Labelled], gts: list[Labelled], threshold: float = 0.5) -> dict[str, float]:
    """Text detection / OCR: box P/R/F1 at IoU ≥ `threshold` (words ignored), and word accuracy: the share of
    ground-truth words whose matched box reads exactly the same text (case and diacritics count)."""
    tp = correct = 0
    for p, g in zip(preds, gts):
        pairs = match_pairs([b for _, b in p], [b for _, b in g], threshold)
        tp += len(pairs)
        correct += sum(_same_text(p[i][0], g[j][0]) for i, j in pairs)
    n_gt = sum(len(g) for g in gts)
    prf = _prf(tp, sum(len(p) for p in preds), n_gt)
    return {**prf, "word_acc": correct / n_gt if n_gt else 0.0}


def phrase_box_prf(preds: list[Labelled], gts: list[Labelled], threshold: float = 0.5) -> dict[str, float]:
    """Grounded captions: a predicted (phrase, box) is right when a ground-truth pair has the same phrase
    (case-insensitive, punctuation ignored) and IoU ≥ `threshold`; one-to-one; P/R/F1 over pairs."""
    tp = 0
    for p, g in zip(preds, gts):
        allowed = np.array([[normalize_answer(a) == normalize_answer(b) for b, _ in g] for a, _ in p], bool).reshape(len(p), len(g))
        tp += len(match_pairs([b for _, b in p], [b for _, b in g], threshold, allowed))
    return _prf(tp, sum(len(p) for p in preds), sum(len(g) for g in gts))


def constant_labelled_baseline(gts: list[Labelled]) -> list[Labelled]:
    """The trivial reader: every image answered with its set's most common label at the best constant box."""
    pairs = [pair for g in gts for pair in g]
    if not pairs:
        return [[] for _ in gts]
    label = Counter(label for label, _ in pairs).most_common(1)[0][0]
    box, _ = best_constant_box([b for _, b in pairs])
    return [[(label, box)] for _ in gts]


def read_table(text: str) -> list[list[str]]:
    """A '|'-separated table, one row a line, cells stripped; blank lines dropped."""
    return [[c.strip() for c in line.split("|")] for line in text.strip().splitlines() if line.strip()]


def table_cell_accuracy(preds: list[str], gts: list[str]) -> dict[str, float]:
    """Chart-to-table: cells equal at the same (row, column) below the header, over the larger of the two
    tables' cell counts (missing and extra rows both cost), summed over the set; and the exact-table rate."""
    right = total = exact = 0
    for p, g in zip(preds, gts):
        pt, gt = read_table(p)[1:], read_table(g)[1:]
        right += sum(a == b for pr, gr in zip(pt, gt) for a, b in zip(pr, gr))
        total += max(sum(map(len, pt)), sum(map(len, gt)))
        exact += pt == gt
    return {"cell_acc": right / total if total else 0.0, "exact": exact / max(1, len(gts))}


def majority_table(gts: list[str]) -> str:
    """The trivial table: the most common header, row count and, at each (row, column), the most common cell."""
    tables = [read_table(g) for g in gts]
    if not tables:
        return ""
    rows = Counter(len(t) for t in tables).most_common(1)[0][0]
    cols = Counter(len(r) for t in tables for r in t).most_common(1)[0][0]
    cell = [[Counter(t[r][c] for t in tables if r < len(t) and c < len(t[r])).most_common(1)[0][0]
             if any(r < len(t) and c < len(t[r]) for t in tables) else "" for c in range(cols)] for r in range(rows)]
    return "\n".join(" | ".join(row) for row in cell)


def first_term(text: str, terms: list[str]) -> str | None:
    """The term of `terms` that `text` names first (case-insensitive, whole words, longest term at a
    position: 'xanh dương' before 'xanh'), or None."""
    by_lower = {t.lower(): t for t in terms}
    if not by_lower:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(by_lower, key=len, reverse=True))
    m = re.search(rf"(?<!\w)({alternatives})(?!\w)", text.lower())
    return by_lower[m.group(1)] if m else None


def named_colour_and_kind(text: str, colours: dict[str, str], kinds: dict[str, str]) -> tuple[str | None, str | None]:
    """The canonical names of the first colour word and the first kind word `text` names (None where it names none)."""
    colour, kind = first_term(text, list(colours)), first_term(text, list(kinds))
    return (colours[colour] if colour is not None else None, kinds[kind] if kind is not None else None)


def region_description_scores(preds: list[str], gts: list[str], colours: dict[str, str], kinds: dict[str, str]) -> dict[str, float]:
    """REG: does the description name the target's colour and kind, read as the first colour word and the
    first kind word of each text (the target comes before any relation's anchor)? `colours` / `kinds` map
    every word, in every language, to one canonical name, so 'red' and 'đỏ' are the same colour."""
    colour = kind = both = 0
    for p, g in zip(preds, gts):
        (pc, pk), (gc, gk) = named_colour_and_kind(p, colours, kinds), named_colour_and_kind(g, colours, kinds)
        colour += pc is not None and pc == gc
        kind += pk is not None and pk == gk
        both += pc is not None and pk is not None and (pc, pk) == (gc, gk)
    n = max(1, len(gts))
    return {"colour_acc": colour / n, "kind_acc": kind / n, "acc": both / n}
