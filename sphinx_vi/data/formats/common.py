"""Shared pieces of the readers: JSON rows that survive broken lines, image checks, box checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ...grounding import parse
from ..samples import LoadReport

ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def iter_json_rows(path: Path, report: LoadReport) -> Iterator[tuple[str, Any]]:
    """Rows of a JSON array or JSONL file as (where, row); unparsable rows are reported, not fatal."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl" or not text.lstrip().startswith("["):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{n}", json.loads(line)
            except json.JSONDecodeError as err:
                report.total += 1
                report.skip("broken JSON", f"{path.name}:{n} ({err.msg})")
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        yield from _salvage_array(text, path, report)
        return
    for i, row in enumerate(rows):
        yield f"{path.name}[{i}]", row


def _salvage_array(text: str, path: Path, report: LoadReport) -> Iterator[tuple[str, Any]]:
    """A JSON array with a broken element: decode element by element, skipping to the next one."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    index = 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            row, end = decoder.raw_decode(text, pos)
            yield f"{path.name}[{index}]", row
            pos = end
        except json.JSONDecodeError as err:
            report.total += 1
            line = text.count("\n", 0, pos) + 1
            report.skip("broken JSON", f"{path.name}:{line} ({err.msg})")
            nxt = text.find("\n  {", pos + 1)  # next element of a pretty-printed array
            if nxt == -1:
                nxt = text.find("},", pos + 1)
                nxt = -1 if nxt == -1 else nxt + 2
            if nxt == -1:
                return
            pos = nxt
        index += 1


def check_image(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(problem, size): a cheap header check that the image exists and can be opened."""
    if not path.exists():
        return "missing image", None
    if path.stat().st_size == 0:
        return "unreadable image (0 bytes)", None
    try:
        with Image.open(path) as img:
            return None, img.size
    except Exception:
        return "unreadable image", None


def answer_problem(text: str, size: tuple[int, int]) -> str | None:
    """A reason to reject an answer whose boxes/points fall outside the image or cannot be read."""
    warnings = parse(text, size).warnings
    if not warnings:
        return None
    return "box outside the image" if any("outside" in w or "empty box" in w for w in warnings) else "unreadable box"
