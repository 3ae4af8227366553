"""Text-only data: paragraphs (for stage 1's text loss) and instruction pairs (for stage 2)."""

from __future__ import annotations

import random

from ...text.corpus import shipped_prose
from .language import COLOURS, KINDS, capitalise, indefinite, join_list, noun_phrase, number_word


def paragraph(rng: random.Random) -> str:
    """A few sentences: shipped prose mixed with generated descriptions, one language per paragraph."""
    lang = rng.choice(("vi", "en"))
    prose = [line for line in shipped_prose() if (any(c in line for c in "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹđơư") == (lang == "vi"))]
    sentences = rng.sample(prose, k=min(3, len(prose)))
    items = [indefinite(rng.choice(COLOURS), rng.choice(KINDS), lang) for _ in range(rng.randint(1, 3))]
    generated = (
        f"On the table there {'is' if len(items) == 1 else 'are'} {join_list(items, lang)}."
        if lang == "en"
        else f"Trên bàn có {join_list(items, lang)}."
    )
    sentences.insert(rng.randint(0, len(sentences)), generated)
    return " ".join(sentences)


def instruction(rng: random.Random) -> tuple[str, str]:
    """A text-only question and its answer (translation, arithmetic, counting words)."""
    kind = rng.randrange(3)
    if kind == 0:
        colour, shape = rng.choice(COLOURS), rng.choice(KINDS)
        if rng.random() < 0.5:
            return f"Dịch sang tiếng Anh: {noun_phrase(colour, shape, 'vi')}", noun_phrase(colour, shape, "en")
        return f"Translate into Vietnamese: {noun_phrase(colour, shape, 'en')}", noun_phrase(colour, shape, "vi")
    if kind == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        if rng.random() < 0.5:
            return f"{a} cộng {b} bằng bao nhiêu?", f"{a} cộng {b} bằng {a + b}."
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    n = rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"Viết số {n} bằng chữ.", capitalise(number_word(n, "vi")) + "."
    return f"Write the number {n} in words.", capitalise(number_word(n, "en")) + "."
