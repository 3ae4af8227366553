"""Recognise a data file's format and load it with the right reader."""

from __future__ import annotations

import json
from pathlib import Path

from .formats import load_captions, load_coco_instances, load_coco_keypoints, load_llava, load_refs, load_text
from .samples import LoadResult


def sniff(path: Path) -> str:
    """'llava' | 'captions' | 'text' | 'coco_instances' | 'coco_keypoints' | 'refs' from the first rows."""
    head = path.read_text(encoding="utf-8", errors="replace")[:200_000].lstrip()
    first: object = None
    if path.suffix == ".jsonl" or not head.startswith(("[", "{")):
        for line in head.splitlines():
            try:
                first = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    elif head.startswith("{") and path.suffix != ".jsonl":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict) and "annotations" in data:
            cats = data.get("categories", [])
            return "coco_keypoints" if any("keypoints" in c for c in cats) else "coco_instances"
        first = data
    else:
        decoder = json.JSONDecoder()
        try:
            first, _ = decoder.raw_decode(head, head.index("{"))
        except (ValueError, json.JSONDecodeError):
            first = None
    if isinstance(first, dict):
        if "conversations" in first:
            return "llava" if first.get("image") else "text"
        if "caption" in first:
            return "captions"
        if "text" in first:
            return "text"
        if "ann_id" in first and "sentences" in first:
            return "refs"
    raise ValueError(f"{path}: cannot tell the format (expected LLaVA, captions, text, COCO or refs rows)")


def load_any(path: str | Path, image_root: str | Path | None = None, instances: str | Path | None = None) -> LoadResult:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = "refs" if path.suffix == ".p" else sniff(path)
    if fmt == "llava":
        return load_llava(path, image_root)
    if fmt == "captions":
        return load_captions(path, image_root)
    if fmt == "text":
        return load_text(path)
    if fmt == "coco_instances":
        return load_coco_instances(path, image_root)
    if fmt == "coco_keypoints":
        return load_coco_keypoints(path, image_root)
    inst = Path(instances) if instances else path.parent.parent / "coco" / "instances.json"
    return load_refs(path, inst, image_root)
