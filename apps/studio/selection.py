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


def _ticked(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "x", "✓", "yes")


def read_rows(rows: Any, image_size: tuple[int, int]) -> tuple[list[Detection], list[str]]:
    """(ticked detections clipped to the image, one problem per unusable row: 'row 3: ...')."""
    if rows is None:
        return [], []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame from gr.Dataframe
        rows = rows.values.tolist()
    dets: list[Detection] = []
    problems: list[str] = []
    for n, row in enumerate(rows, start=1):
        cells = list(row) + [None] * (len(HEADERS) - len(row))
        if not any(c not in (None, "") for c in cells) or not _ticked(cells[0]):
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
