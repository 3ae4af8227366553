"""A checkpoint's held-out scores, kept beside its weights (`evaluation.json`) so whoever loads it can see them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EVALUATION_FILE = "evaluation.json"
# The headline figures a model card shows, in order: report key → label
HEADLINE = {"rec_acc50": "REC Acc@0.5", "det_f1_50": "detection F1@0.5", "pose_oks_ap": "pose OKS AP", "vqa_acc": "VQA"}


def record_evaluation(checkpoint: Path, report: dict[str, Any], data: str, limit: int | None) -> Path:
    """Write `report` (its public keys), the held-out data it came from and when, into `checkpoint`."""
    path = Path(checkpoint) / EVALUATION_FILE
    record = {"data": str(data), "limit": limit, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "scores": {k: v for k, v in report.items() if not k.startswith("_")}}
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def headline(record: dict[str, Any]) -> str:
    """'REC Acc@0.5 0.660 · VQA 0.628' from an evaluation record (empty when it has none of the headline figures)."""
    scores = record.get("scores", {})
    return " · ".join(f"{label} {scores[key]:.3f}" for key, label in HEADLINE.items() if isinstance(scores.get(key), (int, float)))
