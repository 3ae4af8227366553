"""Several single-turn questions about one image, joined into one multi-turn conversation.

LLaVA-1.5 trains on conversations that ask many questions about one image: the image is encoded
once and every answer carries loss, so a step sees several supervised answers for the price of
one image. `join_turns` builds such conversations from single-turn samples of the same task,
image and language (so one conversation never asks the same object twice in two languages,
which would let later answers copy earlier ones).
"""

from __future__ import annotations

import random
from collections import defaultdict

from ..text.tokenizer import IMAGE_TOKEN
from .samples import Sample


def _strip_image(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def join_turns(samples: list[Sample], max_turns: int, seed: int = 0) -> list[Sample]:
    """Group one-image, single-turn chat samples by (task, image, language) into conversations of at
    most `max_turns` turns, turns in random order; the image placeholder stays in the first turn only.
    Other samples (text-only, multi-turn, several or no images) pass through unchanged."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if max_turns == 1:
        return list(samples)
    rng = random.Random(seed)
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    out: list[Sample] = []
    for s in samples:
        single = s.kind == "chat" and len(s.images) == 1 and [m["role"] for m in s.messages] == ["user", "assistant"]
        if single:
            groups[(s.task, str(s.images[0]), s.lang)].append(s)
        else:
            out.append(s)
    for members in groups.values():
        rng.shuffle(members)
        for i in range(0, len(members), max_turns):
            chunk = members[i : i + max_turns]
            if len(chunk) == 1:
                out.append(chunk[0])
                continue
            messages = [{"role": "user", "content": IMAGE_TOKEN + "\n" + _strip_image(chunk[0].messages[0]["content"])},
                        chunk[0].messages[1]]
            for s in chunk[1:]:
                messages += [{"role": "user", "content": _strip_image(s.messages[0]["content"])}, s.messages[1]]
            first = chunk[0]
            out.append(Sample(id="+".join(s.id for s in chunk), messages=messages, images=list(first.images),
                              task=first.task, lang=first.lang))
    rng.shuffle(out)
    return out
