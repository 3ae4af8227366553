"""Multi-turn chat that keeps the KV cache: the image is encoded once, each turn prefills only what is new.

A LLaVA-style stack re-runs the whole history (image included) on every turn. Here the session
keeps the token ids it has seen and the cache that holds them; the next turn's prompt (rendered
by the same chat template, so it starts with the same ids) is fed from the first id the cache
does not already hold. Greedy answers are the same as re-running the history (tested).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from PIL import Image
from transformers import DynamicCache

from .generation import Generator, build_messages
from .images import ImageInput
from .processing import PromptTooLongError


def image_key(image: Image.Image) -> str:
    """A content hash of a loaded image (size, mode and pixels)."""
    h = hashlib.sha1(f"{image.size}{image.mode}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ChatSession:
    """A conversation about one image: `send(prompt) -> answer`, reusing the cache between turns.

    >>> chat = vi.start_chat("street.jpg")      # or ChatSession(Generator(model, processor), image)
    >>> chat.send("Có gì trong ảnh?")
    >>> chat.send("Xe màu đỏ ở đâu?")   # prefills only this turn's tokens
    """

    def __init__(self, generator: Generator, image: ImageInput, history: list[tuple[str, str]] | None = None) -> None:
        self.generator = generator
        self.image = generator.processor.load(image)
        self.key = image_key(self.image)
        self.history: list[tuple[str, str]] = list(history or [])
        self._ids: list[int] = []  # every id the cache has seen (prompt + generated)
        self._cache: DynamicCache | None = None
        self.stats = {"turns": 0, "prefilled_tokens": 0, "reused_tokens": 0}

    def _prompt_ids(self, prompt: str) -> list[int]:
        processor = self.generator.processor
        text = processor.apply_chat_template(build_messages(prompt, self.history))
        ids = processor.expand_image_tokens(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) > processor.settings.context_length:
            raise PromptTooLongError(
                f"conversation is {len(ids)} tokens (visual tokens included) but the model's context is "
                f"{processor.settings.context_length}; start a new chat or shorten the history"
            )
        return ids

    @torch.inference_mode()
    def send(self, prompt: str, **generate_kwargs: Any) -> str:
        """Answer `prompt` given the history so far; the answer joins the history."""
        gen, model = self.generator, self.generator.model
        kwargs = gen.options(**generate_kwargs)
        if kwargs.get("num_beams", 1) != 1:
            raise ValueError("a cached chat session decodes one sequence: use num_beams=1 (or SphinxVi.chat for beam search)")
        ids = self._prompt_ids(prompt)
        cached = self._cache.get_seq_length() if self._cache is not None else 0
        keep = min(_common_prefix(self._ids, ids), cached, len(ids) - 1)
        image_end = max(i for i, t in enumerate(ids) if t == gen.processor.image_token_id) + 1
        inputs: dict[str, Any] = {}
        if self._cache is None or keep < image_end:  # first turn, or the image is not in the cache
            self._cache, keep = DynamicCache(), 0
            inputs["pixel_values"] = gen.processor.image_to_views(self.image).unsqueeze(0).to(gen.device)  # (1, V, 3, R, R)
        elif keep < cached:
            self._cache.crop(keep - cached)  # drop what the new prompt does not share
        input_ids: Any = torch.tensor([ids], device=gen.device)  # (1, L) long
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), cache=self._cache,
                             return_dict_in_generate=True, **inputs, **kwargs)
        self._cache = out.cache
        self._ids = out.sequences[0].tolist()
        self.stats["turns"] += 1
        self.stats["prefilled_tokens"] += len(ids) - keep
        self.stats["reused_tokens"] += keep
        answer = gen.decode_new(out.sequences, len(ids))[0]
        self.history.append((prompt, answer))
        return answer
