"""Stick-figure people with the 17 COCO keypoints, some occluded."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ...grounding.keypoints import COCO_KEYPOINTS, COCO_SKELETON

SKIN = (230, 190, 160)


@dataclass
class Person:
    keypoints: dict[str, tuple[float, float, int]]  # name → (x, y, visibility 1=occluded, 2=visible)
    box: tuple[float, float, float, float]
    colour: tuple[int, int, int]


def _figure(rng: random.Random, cx: float, top: float, height: float) -> dict[str, tuple[float, float]]:
    """Keypoints of a standing figure with random limb angles; `height` from head top to ankles."""
    u = height / 8.0  # head height unit
    head_c = (cx, top + u * 0.6)
    facing = rng.uniform(-0.25, 0.25) * u
    pts = {
        "nose": (head_c[0] + facing, head_c[1] + 0.1 * u),
        "left eye": (head_c[0] + 0.22 * u + facing, head_c[1] - 0.1 * u),
        "right eye": (head_c[0] - 0.22 * u + facing, head_c[1] - 0.1 * u),
        "left ear": (head_c[0] + 0.45 * u, head_c[1]),
        "right ear": (head_c[0] - 0.45 * u, head_c[1]),
    }
    shoulder_y, hip_y = top + 1.6 * u, top + 4.2 * u
    half_sh, half_hip = 0.9 * u, 0.55 * u
    pts["left shoulder"], pts["right shoulder"] = (cx + half_sh, shoulder_y), (cx - half_sh, shoulder_y)
    pts["left hip"], pts["right hip"] = (cx + half_hip, hip_y), (cx - half_hip, hip_y)
    for side, sign in (("left", 1), ("right", -1)):
        a1 = math.radians(rng.uniform(-40, 170))  # upper arm angle from straight down, outward
        a2 = a1 + math.radians(rng.uniform(-60, 120))
        sx, sy = pts[f"{side} shoulder"]
        ex, ey = sx + sign * 1.4 * u * math.sin(a1), sy + 1.4 * u * math.cos(a1)
        pts[f"{side} elbow"] = (ex, ey)
        pts[f"{side} wrist"] = (ex + sign * 1.3 * u * math.sin(a2), ey + 1.3 * u * math.cos(a2))
        l1 = math.radians(rng.uniform(-15, 60))  # legs: standing, striding, kicking
        l2 = l1 + math.radians(rng.uniform(-60, 15))
        hx, hy = pts[f"{side} hip"]
        kx, ky = hx + sign * 1.9 * u * math.sin(l1), hy + 1.9 * u * math.cos(l1)
        pts[f"{side} knee"] = (kx, ky)
        pts[f"{side} ankle"] = (kx + sign * 1.9 * u * math.sin(l2), ky + 1.9 * u * math.cos(l2))
    return {name: pts[name] for name in COCO_KEYPOINTS}


def sample_people(rng: random.Random, size: int, count: int, occlusion_rate: float = 0.3) -> list[Person]:
    people: list[Person] = []
    slots = list(range(count))
    for i in slots:
        height = rng.uniform(0.55, 0.85) * size
        width_slot = size / count
        cx = width_slot * (i + 0.5) + rng.uniform(-0.1, 0.1) * width_slot
        top = rng.uniform(0.02 * size, size - height - 0.02 * size)
        pts = _figure(rng, cx, top, height)
        xs = [p[0] for p in pts.values()]
        ys = [p[1] for p in pts.values()]
        pad = height / 16
        box = (
            max(0.0, min(xs) - pad),
            max(0.0, min(ys) - pad * 1.5),
            min(float(size), max(xs) + pad),
            min(float(size), max(ys) + pad / 2),
        )
        colour = tuple(rng.randint(20, 140) for _ in range(3))
        kps = {n: (min(max(x, 0.0), size - 1.0), min(max(y, 0.0), size - 1.0), 2) for n, (x, y) in pts.items()}
        people.append(Person(kps, box, colour))  # type: ignore[arg-type]
    return people


def draw_people(img: Image.Image, people: list[Person], rng: random.Random, occlusion_rate: float = 0.3) -> None:
    """Draw each figure; with `occlusion_rate`, a grey board hides its legs (keypoints there → v=1)."""
    draw = ImageDraw.Draw(img)
    for p in people:
        k = p.keypoints
        unit = (p.box[3] - p.box[1]) / 8
        width = max(2, int(unit * 0.35))
        for a, b in COCO_SKELETON:
            if "ear" in a or "ear" in b or "eye" in a or "eye" in b:
                continue
            draw.line((k[a][0], k[a][1], k[b][0], k[b][1]), fill=p.colour, width=width)
        draw.line((*_mid(k, "left shoulder", "right shoulder"), *_mid(k, "left hip", "right hip")), fill=p.colour, width=width)
        hx, hy = _mid(k, "left ear", "right ear")
        r = unit * 0.55
        draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=SKIN, outline=p.colour, width=max(1, width // 2))
        for name in ("left eye", "right eye", "nose"):
            x, y, _ = k[name]
            draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(40, 40, 40))
        if rng.random() < occlusion_rate:
            y0 = (k["left knee"][1] + k["left hip"][1]) / 2
            board = (p.box[0] - 2, y0, p.box[2] + 2, p.box[3] + 2)
            draw.rectangle(board, fill=(150, 150, 150), outline=(110, 110, 110))
            for name, (x, y, _v) in list(k.items()):
                if board[0] <= x <= board[2] and board[1] <= y <= board[3]:
                    k[name] = (x, y, 1)


def _mid(k, a: str, b: str) -> tuple[float, float]:
    return (k[a][0] + k[b][0]) / 2, (k[a][1] + k[b][1]) / 2
