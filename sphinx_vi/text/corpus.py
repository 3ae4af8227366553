"""The Vietnamese + English text the tiny tokenizer is trained on: shipped prose plus grammar lines."""

from __future__ import annotations

import random
from collections.abc import Iterator
from importlib import resources

from ..grounding.keypoints import COCO_KEYPOINTS, KEYPOINT_LABELS_VI
from ..prompts import TASK_PROMPTS

COLOURS = {
    "red": "đỏ", "green": "xanh lá", "blue": "xanh dương", "yellow": "vàng",
    "purple": "tím", "orange": "cam", "white": "trắng", "black": "đen",
}
SHAPES = {
    "circle": "hình tròn", "square": "hình vuông", "triangle": "tam giác",
    "rectangle": "hình chữ nhật", "star": "ngôi sao", "person": "người",
}
RELATIONS = {"left of": "bên trái", "right of": "bên phải", "above": "phía trên", "below": "phía dưới"}


def shipped_prose() -> list[str]:
    text = resources.files("sphinx_vi.assets.corpus").joinpath("vi_en.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _box(rng: random.Random) -> str:
    x1, y1 = rng.randint(0, 80) / 100, rng.randint(0, 80) / 100
    x2, y2 = min(1.0, x1 + rng.randint(5, 40) / 100), min(1.0, y1 + rng.randint(5, 40) / 100)
    return f"[{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}]"


def grammar_lines(num: int = 2000, seed: int = 0) -> Iterator[str]:
    """Prompts and answers in both languages with boxes and keypoints, deterministic from `seed`."""
    rng = random.Random(seed)
    for _ in range(num):
        colour_en = rng.choice(list(COLOURS))
        shape_en = rng.choice(list(SHAPES))
        rel_en = rng.choice(list(RELATIONS))
        phrase_en = f"the {colour_en} {shape_en} {rel_en} the {rng.choice(list(SHAPES))}"
        phrase_vi = f"{SHAPES[shape_en]} màu {COLOURS[colour_en]} ở {RELATIONS[rel_en]} {rng.choice(list(SHAPES.values()))}"
        kp = rng.choice(COCO_KEYPOINTS)
        point = f"[{rng.randint(0, 100) / 100:.2f},{rng.randint(0, 100) / 100:.2f}]"
        yield TASK_PROMPTS["rec"]["en"].format(expression=phrase_en) + f" <p>{phrase_en}</p> {_box(rng)}"
        yield TASK_PROMPTS["rec"]["vi"].format(expression=phrase_vi) + f" <p>{phrase_vi}</p> {_box(rng)}"
        yield TASK_PROMPTS["detect"][rng.choice(["en", "vi"])].format(category=SHAPES[shape_en]) + f" {_box(rng)}"
        yield f"<p>{kp}</p> {point}, {kp.replace(' ', '_')}{point} ({KEYPOINT_LABELS_VI[kp]})"
    for task in TASK_PROMPTS.values():
        for template in task.values():
            yield template.format(expression="x", box=_box(rng), category="x", question="?")


def training_corpus() -> list[str]:
    return shipped_prose() * 5 + list(grammar_lines())
