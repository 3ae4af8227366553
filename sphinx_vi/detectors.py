"""Other grounding models as detectors: a local transformers checkpoint asked for boxes, read through its grammar.

    from sphinx_vi.detectors import ForeignDetector
    det = ForeignDetector.load("path/to/kosmos-2-patch14-224")      # the family from its config.json
    det.detect("photo.jpg", "con mèo")                              # GroundedAnswer, boxes in pixels of the photo

Each family says how to ask (its prompt), how to read the generated ids back into text, and which
`grounding.dialects` grammar that text is in. A checkpoint loads from a local path (a hub id only with
`allow_download=True`); a config whose model type is not the family's is refused, never guessed.
Families: Kosmos-2, Florence-2, Qwen2.5-VL and InternVL (transformers' `internvl`, the InternVL3 port).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .grounding import GroundedAnswer, read_answer
from .grounding.dialects import Dialect, get_dialect
from .grounding.dialects.qwen25vl import Qwen25VLDialect
from .images import load_image


class ForeignModelError(ValueError):
    """The checkpoint is not a grounding model this module knows, or not the family it was said to be."""


@dataclass(frozen=True)
class Family(ABC):
    name: str
    model_types: tuple[str, ...]  # config.json `model_type`s of this family
    dialect: str  # how its answers write boxes (grounding.dialects)

    @abstractmethod
    def prompt(self, query: str) -> str:
        """The text that asks this family for `query`'s boxes (empty query: every object)."""

    @abstractmethod
    def decode(self, processor: Any, sequences: torch.Tensor, prompt_length: int) -> str:
        """(1, L + n) generated ids → the text its grammar reads."""

    def inputs(self, processor: Any, image: Image.Image, query: str) -> Any:
        """The model inputs for one image and query (a plain prompt; chat models apply their template)."""
        return processor(text=self.prompt(query), images=image, return_tensors="pt")

    def grammar(self, processor: Any) -> Dialect:
        """The grammar its answers are read with (a family whose coordinates depend on the processor builds its own)."""
        return get_dialect(self.dialect)


@dataclass(frozen=True)
class Kosmos2(Family):
    """`<grounding><phrase> query</phrase>`: the model continues with `<object><patch_index_…>…</object>`."""

    def prompt(self, query: str) -> str:
        return f"<grounding><phrase> {query}</phrase>" if query else "<grounding> An image of"

    def decode(self, processor: Any, sequences: torch.Tensor, prompt_length: int) -> str:
        # the phrase is in the prompt and its boxes in the answer: the grammar reads them together. Decoded as the
        # model card does, then cut after the image by the processor's own `post_process_generation`.
        text = processor.batch_decode(sequences, skip_special_tokens=True)[0]
        return str(processor.post_process_generation(text, cleanup_and_extract=False)).strip()


@dataclass(frozen=True)
class Florence2(Family):
    """`<CAPTION_TO_PHRASE_GROUNDING>query` (or `<OD>` for every object): the decoder writes `phrase<loc_…>×4`."""

    def prompt(self, query: str) -> str:
        return f"<CAPTION_TO_PHRASE_GROUNDING>{query}" if query else "<OD>"

    def decode(self, processor: Any, sequences: torch.Tensor, prompt_length: int) -> str:
        # an encoder-decoder: the sequences are the answer alone; its <loc_k> tokens must stay (the model card keeps them)
        return str(processor.batch_decode(sequences, skip_special_tokens=False)[0])


@dataclass(frozen=True)
class ChatFamily(Family):
    """A chat model: one user turn (the image, then the prompt) through its own chat template; the answer alone is read."""

    tags_are_special: bool = False  # its box tags are special tokens (InternVL's <ref>/<box>): keep them, cut at end of turn

    def inputs(self, processor: Any, image: Image.Image, query: str) -> Any:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt(query)}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        return processor(text=[text], images=[image], return_tensors="pt")

    def decode(self, processor: Any, sequences: torch.Tensor, prompt_length: int) -> str:
        answer = sequences[:, prompt_length:]
        if not self.tags_are_special:
            return str(processor.batch_decode(answer, skip_special_tokens=True)[0]).strip()
        text = str(processor.batch_decode(answer, skip_special_tokens=False)[0])
        for end in (processor.tokenizer.eos_token, processor.tokenizer.pad_token):
            text = text.split(end)[0] if end else text
        return text.strip()


@dataclass(frozen=True)
class Qwen25VL(ChatFamily):
    """Asked for JSON `bbox_2d` boxes, which it writes in pixels of its resized input (read back with the processor's own
    resizing bounds)."""

    def prompt(self, query: str) -> str:
        what = f'every "{query}"' if query else "every object"
        return f'Locate {what} in the image and output the bounding boxes in JSON format with "bbox_2d" and "label".'

    def grammar(self, processor: Any) -> Dialect:
        images = processor.image_processor  # its pixel bounds are `size` = {shortest_edge: min_pixels, longest_edge: max_pixels}
        return Qwen25VLDialect(factor=int(images.patch_size * images.merge_size), min_pixels=int(images.size["shortest_edge"]),
                               max_pixels=int(images.size["longest_edge"]))


@dataclass(frozen=True)
class InternVL(ChatFamily):
    """InternVL's grounding prompt (its RefCOCO evaluation's): it answers `<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>`
    on a 0–1000 grid over the image."""

    def prompt(self, query: str) -> str:
        if not query:
            return "Please detect every object in the image and give each one's <ref>name</ref> and bounding box."
        return f"Please provide the bounding box coordinate of the region this sentence describes: <ref>{query}</ref>"


FAMILIES: dict[str, Family] = {f.name: f for f in (Kosmos2("kosmos2", ("kosmos-2",), "kosmos2"),
                                                   Florence2("florence2", ("florence2",), "florence2"),
                                                   Qwen25VL("qwen2_5_vl", ("qwen2_5_vl",), "qwen2_5_vl"),
                                                   InternVL("internvl", ("internvl",), "internvl", tags_are_special=True))}


@dataclass
class ForeignDetector:
    family: Family
    model: Any
    processor: Any

    @classmethod
    def load(cls, path: str | Path, family: str | None = None, allow_download: bool = False) -> ForeignDetector:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        local = Path(path).expanduser()
        if not local.exists() and not allow_download:
            raise FileNotFoundError(f"{path}: no such checkpoint directory (a hub id needs allow_download=True)")
        config = AutoConfig.from_pretrained(str(path), local_files_only=not allow_download)
        known = {t: f for f in FAMILIES.values() for t in f.model_types}
        chosen = FAMILIES.get(family) if family else known.get(config.model_type)
        if chosen is None:
            raise ForeignModelError(f"{path}: model type {config.model_type!r} is not a known grounding family "
                                    f"({', '.join(FAMILIES)}{'' if family is None else f'; asked for {family!r}'})")
        if config.model_type not in chosen.model_types:
            raise ForeignModelError(f"{path} is a {config.model_type!r} model, not {chosen.name} ({', '.join(chosen.model_types)})")
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=not allow_download)
        model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=not allow_download).eval()
        return cls(chosen, model, processor)

    @torch.inference_mode()
    def detect(self, image: Any, query: str, max_new_tokens: int = 64) -> GroundedAnswer:
        """Ask for `query`'s boxes (greedy); the answer read in the family's grammar, in pixels of `image`."""
        img: Image.Image = load_image(image)
        inputs = self.family.inputs(self.processor, img, query.strip())
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        text = self.family.decode(self.processor, out, inputs["input_ids"].shape[1])
        answer = read_answer(text, img.size, self.family.grammar(self.processor))
        if query.strip():  # a box the model wrote without its phrase is the query's
            answer.detections = [d if d.label else replace(d, label=query.strip()) for d in answer.detections]
        return answer
