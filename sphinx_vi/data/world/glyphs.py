"""Rendered words (text detection / OCR) and bar charts (chart to table)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ...fonts import font
from .language import CHART_LABELS_EN, CHART_LABELS_VI, WORDS


@dataclass
class Word:
    text: str
    box: tuple[float, float, float, float]


def draw_words(img: Image.Image, rng: random.Random, count: int) -> list[Word]:
    """Draw up to `count` non-overlapping words; returns their tight boxes."""
    draw = ImageDraw.Draw(img)
    size = img.width
    words: list[Word] = []
    for _ in range(count * 10):
        if len(words) == count:
            break
        text = rng.choice(WORDS)
        f = font(rng.randint(max(8, size // 12), max(10, size // 7)), bold=rng.random() < 0.5)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
        w, h = right - left, bottom - top
        if w >= size - 4 or h >= size - 4:
            continue
        x, y = rng.uniform(2, size - w - 2), rng.uniform(2, size - h - 2)
        box = (x, y, x + w, y + h)
        if any(not (box[2] < o.box[0] or box[0] > o.box[2] or box[3] < o.box[1] or box[1] > o.box[3]) for o in words):
            continue
        colour = tuple(rng.randint(0, 90) for _ in range(3))
        draw.text((x - left, y - top), text, font=f, fill=colour)
        words.append(Word(text, box))
    words.sort(key=lambda wd: (round(wd.box[1] / 8), wd.box[0]))  # reading order
    return words


@dataclass
class Chart:
    labels: list[str]  # as drawn under the bars (English or Vietnamese day names)
    values: list[int]


def draw_chart(img: Image.Image, rng: random.Random) -> Chart:
    """A bar chart of 3–5 bars with values 1–9, day labels under the bars, a y axis with ticks."""
    draw = ImageDraw.Draw(img)
    size = img.width
    n = rng.randint(3, 5)
    start = rng.randint(0, len(CHART_LABELS_EN) - n)
    names = CHART_LABELS_EN if rng.random() < 0.5 else CHART_LABELS_VI
    chart = Chart(list(names[start : start + n]), [rng.randint(1, 9) for _ in range(n)])
    left, right, top, bottom = size * 0.16, size * 0.96, size * 0.08, size * 0.82
    draw.line((left, top, left, bottom), fill=(60, 60, 60))
    draw.line((left, bottom, right, bottom), fill=(60, 60, 60))
    small = font(max(7, size // 16))
    unit = (bottom - top) / 10
    for v in (0, 5, 10):
        y = bottom - v * unit
        draw.line((left - 3, y, left, y), fill=(60, 60, 60))
        draw.text((2, y - size / 32), str(v), font=small, fill=(60, 60, 60))
    slot = (right - left) / n
    colour = tuple(rng.randint(30, 200) for _ in range(3))
    for i, (label, value) in enumerate(zip(chart.labels, chart.values)):
        x0 = left + slot * i + slot * 0.18
        x1 = left + slot * (i + 1) - slot * 0.18
        draw.rectangle((x0, bottom - value * unit, x1, bottom), fill=colour)
        draw.text((x0, bottom + 2), label, font=small, fill=(40, 40, 40))
    return chart
