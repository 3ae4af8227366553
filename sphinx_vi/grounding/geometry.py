"""Geometry of the padded square and of boxes (IoU, clipping, de-duplication through shapely)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shapely

Box = tuple[float, float, float, float]  # (x1, y1, x2, y2) in pixels, x1 <= x2, y1 <= y2
Point = tuple[float, float]


@dataclass(frozen=True)
class PaddedSquare:
    """An image of `width`×`height` pasted centred on a square canvas of side max(w, h).

    Text coordinates are fractions of that square; this maps them to and from pixels of the
    original image. The integer offsets are the ones the view builder pastes the image at.
    """

    width: int
    height: int

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    @property
    def offset(self) -> tuple[int, int]:
        """(left, top) padding in pixels."""
        return (self.side - self.width) // 2, (self.side - self.height) // 2

    def to_pixels(self, u: float, v: float) -> Point:
        """Normalised square coordinates → pixels of the original image (unclipped)."""
        left, top = self.offset
        return u * self.side - left, v * self.side - top

    def to_normalized(self, x: float, y: float) -> Point:
        """Pixels of the original image → normalised square coordinates."""
        left, top = self.offset
        return (x + left) / self.side, (y + top) / self.side


def _polygon(box: Sequence[float]) -> shapely.Polygon:
    x1, y1, x2, y2 = box
    return shapely.box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def box_area(box: Sequence[float]) -> float:
    return float(_polygon(box).area)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes; 0 when both are empty."""
    pa, pb = _polygon(a), _polygon(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def clip_box(box: Sequence[float], width: float, height: float) -> Box | None:
    """Intersect a box with the image rectangle; None when nothing of positive area is left."""
    clipped = _polygon(box).intersection(shapely.box(0, 0, width, height))
    if clipped.is_empty or clipped.area <= 0:
        return None
    x1, y1, x2, y2 = clipped.bounds
    return float(x1), float(y1), float(x2), float(y2)


def clip_point(point: Sequence[float], width: float, height: float) -> Point:
    x, y = point
    return float(min(max(x, 0.0), width)), float(min(max(y, 0.0), height))


def deduplicate(boxes: Sequence[Sequence[float]], iou_threshold: float = 0.9) -> list[int]:
    """Indices of boxes to keep: a box is dropped when it overlaps an earlier kept one above the threshold."""
    keep: list[int] = []
    tree_boxes: list[shapely.Polygon] = []
    for i, box in enumerate(boxes):
        poly = _polygon(box)
        duplicate = False
        for kept in tree_boxes:
            union = poly.union(kept).area
            if union > 0 and poly.intersection(kept).area / union > iou_threshold:
                duplicate = True
                break
        if not duplicate:
            keep.append(i)
            tree_boxes.append(poly)
    return keep
