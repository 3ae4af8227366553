"""Typed results of the grounding parser."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .geometry import Box, Point


@dataclass
class Detection:
    """One grounded object in pixel coordinates of the original image.

    `box` is (x1, y1, x2, y2) or None (a keypoint-only answer); `points` maps COCO keypoint
    names (or a point's own label) to (x, y); `score` is None unless a caller scores it.
    """

    label: str
    box: Box | None = None
    score: float | None = None
    points: dict[str, Point] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParseResult:
    """What the parser read from one answer, plus what it could not read."""

    detections: list[Detection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> list[Box]:
        return [d.box for d in self.detections if d.box is not None]
