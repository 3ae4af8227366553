"""Questions and answers about a scene, in Vietnamese and English, in the grounding grammar."""

from __future__ import annotations

import random
from collections import Counter

from ...grounding import format_box, format_boxes, format_point
from ...prompts import Lang, task_prompt
from .glyphs import Chart, Word
from .language import (
    PERSON,
    REGIONS,
    RELATIONS,
    Kind,
    capitalise,
    indefinite,
    join_list,
    noun_phrase,
    number_word,
)
from .people import Person
from .shapes import Shape

QA = tuple[str, str]  # (question, answer)


def _relation_holds(rel: str, a: Shape, b: Shape) -> bool:
    (ax, ay), (x1, y1, x2, y2) = a.centre, b.box
    return {"left": ax < x1, "right": ax > x2, "above": ay < y1, "below": ay > y2}[rel]


def referring_expression(shapes: list[Shape], i: int, rng: random.Random, lang: Lang) -> str | None:
    """A phrase that picks out shape `i` alone: 'the red circle', or with a relation to a unique shape."""
    target = shapes[i]
    same = [s for j, s in enumerate(shapes) if j != i and s.kind == target.kind and s.colour == target.colour]
    base = noun_phrase(target.colour, target.kind, lang)
    if not same:
        return base
    anchors = [
        s for s in shapes
        if s is not target and sum(1 for o in shapes if o.kind == s.kind and o.colour == s.colour) == 1
    ]
    options = [
        (rel, anchor)
        for anchor in anchors
        for rel in RELATIONS
        if _relation_holds(rel, target, anchor) and not any(_relation_holds(rel, o, anchor) for o in same)
    ]
    if not options:
        return None
    rel, anchor = rng.choice(options)
    en, vi = RELATIONS[rel]
    other = noun_phrase(anchor.colour, anchor.kind, lang)
    return f"{base} {en} {other}" if lang == "en" else f"{base} {vi} {other}"


def rec_and_reg(shapes: list[Shape], size: tuple[int, int], rng: random.Random, lang: Lang) -> tuple[list[QA], list[QA]]:
    rec, reg = [], []
    for i, s in enumerate(shapes):
        expr = referring_expression(shapes, i, random.Random(rng.random()), lang)
        if expr is None:
            continue
        box = format_box(s.box, size)
        rec.append((task_prompt("rec", lang, expression=expr), box))
        reg.append((task_prompt("reg", lang, box=box), capitalise(expr) + "."))
    return rec, reg


def _category(kind: Kind, lang: Lang) -> str:
    return kind.en_plural if lang == "en" else kind.vi


def detection(shapes: list[Shape], size: tuple[int, int], kind: Kind, lang: Lang) -> QA:
    boxes = [s.box for s in shapes if s.kind == kind]
    question = task_prompt("detect", lang, category=_category(kind, lang))
    if not boxes:
        answer = f"There are no {kind.en_plural} in the image." if lang == "en" else f"Không có {kind.vi} nào trong ảnh."
    else:
        answer = f"<p>{_category(kind, lang)}</p> {format_boxes(boxes, size)}"
    return question, answer


def counting(shapes: list[Shape], kind: Kind, lang: Lang) -> QA:
    n = sum(1 for s in shapes if s.kind == kind)
    q = f"How many {kind.en_plural} are there in the image?" if lang == "en" else f"Có bao nhiêu {kind.vi} trong ảnh?"
    return task_prompt("vqa_short", lang, question=q), str(n)


def attribute(shapes: list[Shape], rng: random.Random, lang: Lang) -> QA | None:
    kinds = Counter(s.kind for s in shapes)
    unique = [s for s in shapes if kinds[s.kind] == 1]
    if not unique:
        return None
    s = rng.choice(unique)
    if lang == "en":
        q, a = f"What colour is the {s.kind.en}?", s.colour.en
    else:
        q, a = f"{capitalise(s.kind.vi)} có màu gì?", s.colour.vi
    return task_prompt("vqa_short", lang, question=q), a


def _region(s: Shape, size: tuple[int, int], lang: Lang) -> str:
    cx, cy = s.centre
    col = min(2, int(3 * cx / size[0]))
    row = min(2, int(3 * cy / size[1]))
    en, vi = REGIONS[row * 3 + col]
    return en if lang == "en" else vi


def caption_real(shapes: list[Shape], lang: Lang) -> str:
    """Short alt-text: what is there, grouped and counted."""
    groups = Counter((s.colour, s.kind) for s in shapes)
    parts = []
    for (colour, kind), n in groups.items():
        if n == 1:
            parts.append(indefinite(colour, kind, lang))
        elif lang == "en":
            parts.append(f"{number_word(n, lang)} {colour.en} {kind.en_plural}")
        else:
            parts.append(f"{number_word(n, lang)} {kind.vi} màu {colour.vi}")
    return capitalise(join_list(parts, lang)) + "."


def caption_dense(shapes: list[Shape], size: tuple[int, int], rng: random.Random, lang: Lang) -> str:
    """Long description: every shape with its box and region, plus relations between shapes."""
    n = len(shapes)
    if lang == "en":
        lines = [f"The image shows {number_word(n, 'en')} shape{'s' if n != 1 else ''} on a light background."]
    else:
        lines = [f"Bức ảnh có {number_word(n, 'vi')} hình trên nền sáng."]
    for s in shapes:
        phrase = indefinite(s.colour, s.kind, lang)
        where = _region(s, size, lang)
        lines.append(f"{capitalise(f'<p>{phrase}</p> {format_box(s.box, size)}')} {'is ' if lang == 'en' else ''}{where}.")
    pairs = [(a, b) for a in shapes for b in shapes if a is not b and a.kind != b.kind]
    rng.shuffle(pairs)
    for a, b in pairs[:2]:
        for rel, (en, vi) in RELATIONS.items():
            if _relation_holds(rel, a, b):
                left, right = noun_phrase(a.colour, a.kind, lang), noun_phrase(b.colour, b.kind, lang)
                lines.append(capitalise(f"{left} is {en} {right}." if lang == "en" else f"{left} {vi} {right}."))
                break
    return " ".join(lines)


def keypoints(person: Person, size: tuple[int, int], lang: Lang) -> QA:
    question = task_prompt("keypoints_box", lang, box=format_box(person.box, size))
    answer = ", ".join(f"<p>{name}</p> {format_point((x, y), size)}" for name, (x, y, v) in person.keypoints.items() if v > 0)
    return question, answer


def people_detection(people: list[Person], size: tuple[int, int], lang: Lang) -> QA:
    question = task_prompt("detect", lang, category=_category(PERSON, lang))
    return question, f"<p>{_category(PERSON, lang)}</p> {format_boxes([p.box for p in people], size)}"


def ocr(words: list[Word], size: tuple[int, int], lang: Lang) -> QA:
    answer = ", ".join(f"<p>{w.text}</p> {format_box(w.box, size)}" for w in words)
    return task_prompt("text_detection", lang), answer


def chart_table(chart: Chart, lang: Lang) -> QA:
    header = "label | value" if lang == "en" else "nhãn | giá trị"
    rows = [f"{label} | {value}" for label, value in zip(chart.labels, chart.values)]
    return task_prompt("chart_to_table", lang), "\n".join([header, *rows])
