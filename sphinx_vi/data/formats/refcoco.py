"""RefCOCO-style referring expressions (refs JSON, or the original refs(unc).p pickle) → REC and REG samples."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from ...grounding import format_box
from ...prompts import detect_language, task_prompt
from ..samples import LoadReport, LoadResult, Sample
from .coco import _chat, _coco, annotation_target


def load_refs(
    refs_path: str | Path, instances_path: str | Path, image_root: str | Path | None = None,
    split: str | None = None, check_images: bool = True,
) -> LoadResult:
    """Each sentence of each ref → a REC sample (sentence → box) and a REG sample (box → sentence).

    The `.p` pickle of the original release is read with `pickle`: only open files you trust.
    """
    refs_path, instances_path = Path(refs_path), Path(instances_path)
    if not refs_path.exists():
        raise FileNotFoundError(f"{refs_path}: no such file")
    refs = pickle.loads(refs_path.read_bytes()) if refs_path.suffix == ".p" else json.loads(refs_path.read_text(encoding="utf-8"))
    coco = _coco(instances_path)
    root = Path(image_root) if image_root is not None else instances_path.parent.parent
    report = LoadReport(str(refs_path))
    samples: list[Sample] = []
    for ref in refs:
        if split is not None and ref.get("split") != split:
            continue
        report.total += 1
        where = f"ref {ref.get('ref_id')}"
        ann = coco.anns.get(ref.get("ann_id"))
        if ann is None:
            report.skip("ann_id not in instances", where)
            continue
        target = annotation_target(coco, ann, root, report, check_images, where)
        if target is None:
            continue
        image, size, box = target
        sentences = [s.get("sent", "") for s in ref.get("sentences", []) if isinstance(s, dict)]
        sentences = [s.strip() for s in sentences if s and s.strip()]
        if not sentences:
            report.skip("no sentences", where)
            continue
        text_box = format_box(box, size)
        for k, sent in enumerate(sentences):
            lang = detect_language(sent)
            rid = f"ref-{ref.get('ref_id')}-{k}"
            samples.append(Sample(rid + "-rec", _chat(task_prompt("rec", lang, expression=sent), text_box), [image], "rec", lang))
            reg_answer = sent[:1].upper() + sent[1:] + ("" if sent.endswith(".") else ".")
            samples.append(Sample(rid + "-reg", _chat(task_prompt("reg", lang, box=text_box), reg_answer), [image], "reg", lang))
        report.loaded += 1
    return LoadResult(samples, report)
