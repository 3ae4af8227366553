"""Scenes of coloured shapes: placement with distractors, drawing, and exact polygons."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from .language import COLOURS, KINDS, Colour, Kind


@dataclass
class WorldConfig:
    """Difficulty knobs of the synthetic world."""

    size: int = 128  # image side in pixels
    min_objects: int = 1  # shapes per image
    max_objects: int = 4
    min_scale: float = 0.12  # object side as a fraction of the image side
    max_scale: float = 0.32
    distractor_rate: float = 0.7  # chance a new object copies the colour or the kind of an earlier one
    clutter: int = 6  # thin random lines/dots drawn on the background
    max_overlap_iou: float = 0.05  # placement rejects boxes overlapping more than this


@dataclass
class Shape:
    kind: Kind
    colour: Colour
    box: tuple[float, float, float, float]  # pixels, tight around the drawn polygon
    polygon: list[tuple[float, float]] = field(default_factory=list)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


def _polygon(kind: str, cx: float, cy: float, w: float, h: float) -> list[tuple[float, float]]:
    if kind == "circle":
        return [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a)) for a in (i * 2 * math.pi / 32 for i in range(32))]
    if kind in ("square", "rectangle"):
        return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    if kind == "triangle":
        return [(cx, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    if kind == "diamond":
        return [(cx, cy - h / 2), (cx + w / 2, cy), (cx, cy + h / 2), (cx - w / 2, cy)]
    if kind == "star":
        pts = []
        for i in range(10):
            r = 0.5 if i % 2 == 0 else 0.2
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + w * r * math.cos(a), cy + h * r * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape kind {kind!r}")


def _bounds(poly: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return min(xs), min(ys), max(xs), max(ys)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sample_shapes(rng: random.Random, cfg: WorldConfig, num: int | None = None) -> list[Shape]:
    """Place `num` shapes (default: a random count in the knob range) without heavy overlap."""
    n = num if num is not None else rng.randint(cfg.min_objects, cfg.max_objects)
    shapes: list[Shape] = []
    attempts = 0
    while len(shapes) < n and attempts < 200:
        attempts += 1
        kind, colour = rng.choice(KINDS), rng.choice(COLOURS)
        if shapes and rng.random() < cfg.distractor_rate:  # same colour or same kind as an earlier shape
            other = rng.choice(shapes)
            if rng.random() < 0.5:
                colour = other.colour
            else:
                kind = other.kind
        side = rng.uniform(cfg.min_scale, cfg.max_scale) * cfg.size
        w = side * (1.6 if kind.en == "rectangle" else 1.0)
        h = side * (0.8 if kind.en == "rectangle" else 1.0)
        cx = rng.uniform(w / 2 + 1, cfg.size - w / 2 - 1)
        cy = rng.uniform(h / 2 + 1, cfg.size - h / 2 - 1)
        poly = _polygon(kind.en, cx, cy, w, h)
        box = _bounds(poly)
        if any(_iou(box, s.box) > cfg.max_overlap_iou for s in shapes):
            continue
        shapes.append(Shape(kind, colour, box, poly))
    return shapes


def background(rng: random.Random, cfg: WorldConfig) -> Image.Image:
    """A light background with a little clutter (thin grey lines and dots)."""
    base = tuple(rng.randint(225, 250) for _ in range(3))
    img = Image.new("RGB", (cfg.size, cfg.size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(cfg.clutter):
        grey = rng.randint(170, 215)
        x1, y1, x2, y2 = (rng.uniform(0, cfg.size) for _ in range(4))
        if rng.random() < 0.5:
            draw.line((x1, y1, x2, y2), fill=(grey, grey, grey), width=1)
        else:
            draw.ellipse((x1, y1, x1 + 2, y1 + 2), fill=(grey, grey, grey))
    return img


def draw_shapes(img: Image.Image, shapes: list[Shape]) -> Image.Image:
    draw = ImageDraw.Draw(img)
    for s in shapes:
        draw.polygon(s.polygon, fill=s.colour.rgb, outline=tuple(int(c * 0.6) for c in s.colour.rgb))
    return img
