"""The editable detection list: model detections and the user's own boxes as table rows (use, label, x1, y1, x2, y2).

Rows are what the user sees and edits (add, remove, relabel, untick); `read_rows` turns them back into
`Detection`s, skipping unticked rows and naming every row it cannot use instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sphinx_vi.grounding import Detection, clip_box

HEADERS = ["use", "label", "x1", "y1", "x2", "y2"]


def to_rows(detections: Sequence[Detection], use: bool = True) -> list[list[Any]]:
    return [[use, d.label, *(round(v, 1) for v in d.box)] for d in detections if d.box is not None]


def _blank(cell: Any) -> bool:
    return cell is None or cell is False or (isinstance(cell, float) and cell != cell) or str(cell).strip() in ("", "nan")


def as_lists(rows: Any) -> list[list[Any]]:
    """The table's rows as lists (a pandas DataFrame from gr.Dataframe, or lists), blank rows dropped."""
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):
        rows = rows.values.tolist()
    return [list(r) for r in rows if not all(_blank(c) for c in r)]


def append_row(rows: Any, detection: Detection) -> list[list[Any]]:
    """The table with `detection` added as a ticked row."""
    return as_lists(rows) + to_rows([detection])


def _ticked(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "x", "✓", "yes")


def read_rows(rows: Any, image_size: tuple[int, int]) -> tuple[list[Detection], list[str]]:
    """(ticked detections clipped to the image, one problem per unusable row: 'row 3: ...')."""
    dets: list[Detection] = []
    problems: list[str] = []
    for n, row in enumerate(as_lists(rows), start=1):
        cells = list(row) + [None] * (len(HEADERS) - len(row))
        if not _ticked(cells[0]):
            continue
        try:
            box = tuple(float(c) for c in cells[2:6])
        except (TypeError, ValueError):
            problems.append(f"row {n}: x1, y1, x2, y2 must be numbers")
            continue
        clipped = clip_box(box, image_size[0], image_size[1])
        if clipped is None:
            problems.append(f"row {n}: the box has no area inside the {image_size[0]}×{image_size[1]} image")
            continue
        dets.append(Detection(str(cells[1] or "").strip() or "object", clipped))
    return dets, problems
