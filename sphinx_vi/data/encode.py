"""Samples → model inputs: token ids with each `<image>` expanded, labels only on what the model must write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..images import ImageError
from ..processing import SphinxViProcessor
from ..text.tokens import IGNORE_INDEX
from .samples import Sample


class SampleTooLongError(ValueError):
    """A sample longer than the training context."""


@dataclass
class EncodedSample:
    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,), IGNORE_INDEX outside assistant turns
    pixel_values: torch.Tensor | None  # (N, V, 3, R, R)
    task: str = "chat"

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class SampleEncoder:
    """Render the chat template, tokenise with offsets, and label the assistant spans.

    Assistant spans are found by rendering growing prefixes of the conversation, so any chat
    template works (Vistral's own included), not only templates with `{% generation %}` blocks.
    """

    def __init__(self, processor: SphinxViProcessor, max_length: int | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length or processor.settings.context_length
        self._lengths: dict[tuple, int] = {}  # token counts by text: the mixture repeats samples

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))

    def text(self, sample: Sample) -> str:
        """The full text the model reads: the rendered chat, or a plain text between BOS and EOS."""
        if sample.kind == "text":
            return (self.tokenizer.bos_token or "") + (sample.text or "") + (self.tokenizer.eos_token or "")
        return self._render(sample.messages)

    def text_and_spans(self, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
        """The full text and the character spans that carry loss."""
        text = self.text(sample)
        if sample.kind == "text":
            return text, [(len(self.tokenizer.bos_token or ""), len(text))]
        spans = []
        for k, m in enumerate(sample.messages):
            if m["role"] != "assistant":
                continue
            start = len(self._render(sample.messages[:k], generation_prompt=True))
            end = len(self._render(sample.messages[: k + 1]))
            spans.append((start, end))
        return text, spans

    def token_ids_and_labels(self, sample: Sample) -> tuple[list[int], list[int]]:
        text, spans = self.text_and_spans(sample)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, labels = [], []
        image_id, per_image = self.processor.image_token_id, self.processor.settings.tokens_per_image
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
            if tok == image_id:
                ids.extend([tok] * per_image)
                labels.extend([IGNORE_INDEX] * per_image)
                continue
            ids.append(tok)
            in_span = e > s and any(a <= s < b for a, b in spans)
            labels.append(tok if in_span else IGNORE_INDEX)
        return ids, labels

    def __call__(self, sample: Sample) -> EncodedSample:
        ids, labels = self.token_ids_and_labels(sample)
        if len(ids) > self.max_length:
            raise SampleTooLongError(f"sample {sample.id}: {len(ids)} tokens > max_length {self.max_length}")
        pixel_values = None
        if sample.images:
            pixel_values = torch.stack([self.processor.image_to_views(p) for p in sample.images])  # (N, V, 3, R, R)
        return EncodedSample(torch.tensor(ids), torch.tensor(labels), pixel_values, sample.task)

    def token_count(self, sample: Sample) -> int:
        """len(token_ids_and_labels(sample)[0]) from one rendering and no offsets (the spans are not needed)."""
        ids = self.tokenizer(self.text(sample), add_special_tokens=False)["input_ids"]
        return len(ids) + ids.count(self.processor.image_token_id) * (self.processor.settings.tokens_per_image - 1)

    def length(self, sample: Sample) -> int:
        """Token count without loading images (for length grouping), computed once per distinct text."""
        key = (sample.kind, sample.text, tuple((m["role"], m["content"]) for m in sample.messages))
        if key not in self._lengths:
            self._lengths[key] = self.token_count(sample)
        return self._lengths[key]


def collate(batch: Sequence[EncodedSample | None], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch; drop samples that failed to load (None) and count them."""
    items = [b for b in batch if b is not None]
    dropped = len(batch) - len(items)
    if not items:
        return {"input_ids": None, "dropped": dropped}
    L = max(len(b) for b in items)
    input_ids = torch.full((len(items), L), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), L), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(items), L), dtype=torch.long)
    for i, b in enumerate(items):
        n = len(b)
        input_ids[i, :n], labels[i, :n], attention_mask[i, :n] = b.input_ids, b.labels, 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, **_images(items), "dropped": dropped}


def _images(in_order: list[EncodedSample]) -> dict[str, torch.Tensor | None]:
    """The samples' images stacked in placeholder order: pixel_values (N, V, 3, R, R)."""
    with_images = [b.pixel_values for b in in_order if b.pixel_values is not None]
    return {"pixel_values": torch.cat(with_images) if with_images else None}


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices grouped into rows of at most `capacity` tokens.

    Whole samples only (an image never straddles two rows); a sample longer than `capacity`
    gets a row of its own.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        slot = next((r for r, f in enumerate(free) if f >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            free.append(capacity - lengths[i])
        else:
            rows[slot].append(i)
            free[slot] -= lengths[i]
    return rows


def collate_packed(batch: Sequence[EncodedSample | None], pad_token_id: int, capacity: int) -> dict[str, Any]:
    """Pack a batch into rows of up to `capacity` tokens: same samples, same loss, less padding.

    Each row holds whole samples back to back; `position_ids` restart at 0 for every sample (and
    for the padding tail), there is no `attention_mask`, so the language model attends
    block-diagonally. The first label of every sample is dropped: it would otherwise be the
    target of the previous sample's last token (unpacked, nothing predicts it either).
    Images are reordered to follow their placeholders row by row.
    """
    items = [b for b in batch if b is not None]
    dropped = len(batch) - len(items)
    if not items:
        return {"input_ids": None, "dropped": dropped}
    rows = pack_rows([len(b) for b in items], capacity)
    L = max(sum(len(items[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), L), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), L), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            b, n = items[i], len(items[i])
            input_ids[r, at : at + n] = b.input_ids
            labels[r, at + 1 : at + n] = b.labels[1:]
            position_ids[r, at : at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(L - at)  # padding: a separate "sample" of its own
    in_order = [items[i] for row in rows for i in row]
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, **_images(in_order), "dropped": dropped}


class EncodedDataset(torch.utils.data.Dataset):
    """Samples encoded on access; a sample whose image fails to load becomes None (dropped by `collate`)."""

    def __init__(self, samples: list[Sample], encoder: SampleEncoder) -> None:
        self.samples = samples
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> EncodedSample | None:
        try:
            return self.encoder(self.samples[index])
        except (ImageError, SampleTooLongError):
            return None
