"""The user's own segmentation prompts: clicked points (positive / negative) and a drawn box, checked against the image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]


class PromptError(ValueError):
    """A prompt that cannot be segmented (empty, outside the image, a box without area): said, never a crash."""


@dataclass(frozen=True)
class MaskPrompt:
    """Points in pixels with labels (1: the object, 0: not the object) and/or one box (x1, y1, x2, y2)."""

    points: tuple[Point, ...] = ()
    labels: tuple[int, ...] = ()
    box: Box | None = None

    def checked(self, width: int, height: int) -> MaskPrompt:
        """This prompt if it can be segmented on a `width`×`height` image (corners of the box put in order)."""
        if not self.points and self.box is None:
            raise PromptError("nothing to segment: click a point on the object or draw a box")
        if len(self.points) != len(self.labels):
            raise PromptError(f"{len(self.points)} points but {len(self.labels)} labels")
        if any(label not in (0, 1) for label in self.labels):
            raise PromptError("point labels are 1 (the object) or 0 (not the object)")
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(f"the point ({x:.0f}, {y:.0f}) is outside the {width}×{height} image")
        if self.points and not any(self.labels) and self.box is None:
            raise PromptError("only negative points: click at least one point on the object (or draw a box)")
        box = self.box
        if box is not None:
            x1, x2 = sorted((max(0.0, min(float(box[0]), width)), max(0.0, min(float(box[2]), width))))
            y1, y2 = sorted((max(0.0, min(float(box[1]), height)), max(0.0, min(float(box[3]), height))))
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise PromptError("the box has no area inside the image: drag from one corner to the opposite one")
            box = (x1, y1, x2, y2)
        return MaskPrompt(tuple((float(x), float(y)) for x, y in self.points), tuple(int(v) for v in self.labels), box)


@dataclass
class MaskChoices:
    """Candidate masks for one prompt, best first (SAM's multimask output, with its predicted IoU as `scores`)."""

    masks: np.ndarray  # (K, H, W) bool
    scores: list[float] = field(default_factory=list)

    @property
    def best(self) -> np.ndarray:
        return self.masks[0]


def ordered(masks: np.ndarray, scores: Sequence[float]) -> MaskChoices:
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return MaskChoices(masks[order], [float(scores[i]) for i in order])
