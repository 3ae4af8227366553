"""Text-only data: JSONL/JSON rows with `text` (plain text, loss on all of it) or LLaVA `conversations`."""

from __future__ import annotations

from pathlib import Path

from ..samples import LoadReport, LoadResult, Sample
from .common import ROLE, iter_json_rows


def load_text(path: str | Path) -> LoadResult:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    report = LoadReport(str(path))
    samples = []
    for where, row in iter_json_rows(path, report):
        report.total += 1
        if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
            samples.append(Sample(id=str(row.get("id", where)), kind="text", text=row["text"].strip(), task="text"))
            continue
        turns = row.get("conversations") if isinstance(row, dict) else None
        if isinstance(turns, list) and turns and all(isinstance(t, dict) and t.get("from") in ROLE and isinstance(t.get("value"), str) for t in turns):
            messages = [{"role": ROLE[t["from"]], "content": t["value"]} for t in turns]
            if "<image>" in "".join(m["content"] for m in messages):
                report.skip("<image> placeholder in text-only data", where)
                continue
            if any(m["role"] == "assistant" and m["content"].strip() for m in messages):
                samples.append(Sample(id=str(row.get("id", where)), messages=messages, task=str(row.get("task", "text_instruction"))))
                continue
        report.skip("row needs non-empty `text` or `conversations`", where)
    report.loaded = len(samples)
    return LoadResult(samples, report)
