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
from collections.abc import Callable

from ..text.tokens import IMAGE_TOKEN
from .samples import Sample


def _strip_image(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def join_turns(samples: list[Sample], max_turns: int, seed: int = 0, fits: Callable[[Sample], bool] | None = None) -> list[Sample]:
    """Group one-image, single-turn chat samples by (task, image, language) into conversations of at
    most `max_turns` turns, turns in random order; the image placeholder stays in the first turn only.
    With `fits` (e.g. "encodes within max_length"), a conversation stops growing before it would
    not fit, so joining never turns usable samples into skipped ones. Other samples (text-only,
    multi-turn, several or no images) pass through unchanged."""
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
        chunk: list[Sample] = []
        for s in members:
            if chunk and (len(chunk) == max_turns or (fits is not None and not fits(_joined(chunk + [s])))):
                out.append(_joined(chunk))
                chunk = []
            chunk.append(s)
        if chunk:
            out.append(_joined(chunk))
    rng.shuffle(out)
    return out


def _joined(chunk: list[Sample]) -> Sample:
    """One conversation from single-turn samples about the same image (the first keeps `<image>`)."""
    if len(chunk) == 1:
        return chunk[0]
    first = chunk[0]
    messages = [{"role": "user", "content": IMAGE_TOKEN + "\n" + _strip_image(first.messages[0]["content"])}, first.messages[1]]
    for s in chunk[1:]:
        messages += [{"role": "user", "content": _strip_image(s.messages[0]["content"])}, s.messages[1]]
    return Sample(id="+".join(s.id for s in chunk), messages=messages, images=list(first.images), task=first.task, lang=first.lang)
