"""The Python API: `SphinxVi` answers in text and returns grounded objects as `Detection`s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch
from PIL import Image

from . import factory
from .generation import Generator, History, as_pairs
from .grounding import GroundedAnswer, format_box, read_answer
from .grounding.constraint import BoxGrammarConstraint
from .images import ImageInput
from .modeling import SphinxViForConditionalGeneration
from .precision import DType
from .processing import SphinxViProcessor
from .prompts import Lang, Task, task_prompt
from .quantization import Quantization
from .session import ChatSession, image_key

__all__ = ["GroundedAnswer", "SphinxVi"]

Prompt = str | Sequence[str] | Callable[[Image.Image], str]


def _is_batch(image: Any) -> bool:
    return isinstance(image, (list, tuple))


class SphinxVi:
    """The task layer: chat, grounded answers, detection, grounding and keypoints on a `Generator`.

    >>> vi = SphinxVi.from_preset("tiny")
    >>> vi.detect("street.jpg", "người")         # -> list[Detection], boxes in pixels
    >>> vi.ground("street.jpg", "chiếc xe màu đỏ")  # -> Detection | None
    """

    def __init__(self, model: SphinxViForConditionalGeneration, processor: SphinxViProcessor) -> None:
        self.generator = Generator(model.eval(), processor)
        self._session: ChatSession | None = None  # the last conversation `chat` continued (its KV cache)

    # --- construction (sphinx_vi.factory) -----------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, seed: int = 0, *, load_weights: bool = False, allow_download: bool | None = None,
                    device: str | torch.device = "cpu", dtype: DType | torch.dtype | None = None) -> SphinxVi:
        """Build preset `name`: random init from `seed`, or (`load_weights`) its parts' checkpoints."""
        return cls(*factory.build_from_preset(name, seed, load_weights=load_weights, allow_download=allow_download,
                                              device=device, dtype=dtype))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu", dtype: DType | torch.dtype | None = None,
                        quantization: Quantization | None = None) -> SphinxVi:
        """Load a directory written by `save_pretrained`, or an embedded model by name (`tiny-shapes`).

        `dtype`: float32 (default), bfloat16, or auto (bf16 where the hardware computes it: `sphinx_vi.precision`).
        `quantization`: nf4 or int8 LLM weights through bitsandbytes (`sphinx_vi.quantization`)."""
        return cls(*factory.load_checkpoint(path, device=device, dtype=dtype, quantization=quantization))

    @classmethod
    def load(cls, name_or_path: str, *, seed: int = 0, dtype: DType | torch.dtype | None = None) -> SphinxVi:
        """A checkpoint directory if one exists at that path, else a preset of that name."""
        return cls(*factory.load_model(name_or_path, seed=seed, dtype=dtype))

    def save_pretrained(self, path: str | Path) -> None:
        factory.save_checkpoint(path, self.model, self.processor)

    @property
    def model(self) -> SphinxViForConditionalGeneration:
        return self.generator.model

    @property
    def processor(self) -> SphinxViProcessor:
        return self.generator.processor

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def box_grammar(self) -> BoxGrammarConstraint:
        return self.generator.box_grammar

    # --- chat -----------------------------------------------------------------------------------
    def _prepare(self, image: Any, prompt: Prompt) -> tuple[list[Image.Image], list[str]]:
        """Load the image(s) once and pair each with its prompt (a string, a list, or a function of the image)."""
        images = list(image) if _is_batch(image) else [image]
        loaded = [self.processor.load(im) for im in images]
        if callable(prompt):
            prompts = [prompt(im) for im in loaded]
        else:
            prompts = [prompt] * len(loaded) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(loaded):
            raise ValueError(f"{len(prompts)} prompts for {len(loaded)} images")
        return loaded, prompts

    @overload
    def chat(self, image: ImageInput, prompt: str, history: History | None = None, **gen: Any) -> str: ...
    @overload
    def chat(self, image: Sequence[ImageInput], prompt: str | Sequence[str], history: History | None = None, **gen: Any) -> list[str]: ...

    def chat(self, image, prompt, history=None, **generate_kwargs):
        """Answer `prompt` about `image` (a list of images → a list of answers).

        For one image, a call whose `history` continues the previous call's conversation (same
        image, same turns) reuses that conversation's KV cache: the image is not encoded again
        and only the new turn is prefilled. Beam search and batches run statelessly.
        """
        pairs = as_pairs(history)
        if not _is_batch(image) and isinstance(prompt, str) and pairs is not None and generate_kwargs.get("num_beams", 1) == 1:
            loaded = self.processor.load(image)
            s = self._session
            if s is None or s.history != pairs or s.key != image_key(loaded):
                s = ChatSession(self.generator, loaded, pairs)
            answer = s.send(prompt, **generate_kwargs)
            self._session = s
            return answer
        loaded, prompts = self._prepare(image, prompt)
        answers = self.generator.answer(loaded, prompts, history, **generate_kwargs)
        return answers if _is_batch(image) else answers[0]

    def start_chat(self, image: ImageInput, history: History | None = None) -> ChatSession:
        """A conversation about `image` that keeps its KV cache between turns: `.send(prompt)`."""
        pairs = as_pairs(history)
        if pairs is None:
            raise ValueError("history must alternate user and assistant turns")
        return ChatSession(self.generator, image, pairs)

    # --- grounding tasks ------------------------------------------------------------------------
    def ask(self, image, prompt: Prompt, **generate_kwargs: Any):
        """Answer `prompt` and parse it: GroundedAnswer(text, detections, warnings) (a list for a batch).

        `prompt` may be a function of the loaded image (to write a box in its coordinates).
        """
        loaded, prompts = self._prepare(image, prompt)
        answers = self.generator.answer(loaded, prompts, None, **generate_kwargs)
        results = []
        for text, im in zip(answers, loaded):
            results.append(read_answer(text, im.size))
        return results if _is_batch(image) else results[0]

    def answer(self, image, task: Task, lang: Lang | Literal["auto"] = "auto", *, category: str | None = None,
               expression: str | None = None, box: Sequence[float] | None = None, **generate_kwargs: Any):
        """Ask `task` in its own wording (`sphinx_vi.prompts`) → GroundedAnswer (a list for a batch): the
        answer text, its detections and the parse warnings together. `category` fills detect,
        `expression` rec, `box` (pixels of the image) keypoints_box."""
        fields = {k: v for k, v in (("category", category), ("expression", expression)) if v is not None}
        if box is None:
            return self.ask(image, task_prompt(task, lang, **fields), **generate_kwargs)
        return self.ask(image, lambda im: task_prompt(task, lang, box=format_box(box, im.size), **fields), **generate_kwargs)

    def detect(self, image, query: str, lang: Lang | Literal["auto"] = "auto", **gen: Any):
        """All `query` objects → list[Detection] (a list of lists for a batch of images)."""
        answers = self.answer(image, "detect", lang, category=query, **gen)
        return [a.detections for a in answers] if _is_batch(image) else answers.detections

    def ground(self, image, expression: str, lang: Lang | Literal["auto"] = "auto", **gen: Any):
        """The region `expression` describes → Detection or None (a list for a batch)."""
        answers = self.answer(image, "rec", lang, expression=expression, **gen)
        found = [next((d for d in a.detections if d.box is not None), None) for a in _as_list(answers)]
        for det in found:
            if det is not None:
                det.label = expression
        return found if _is_batch(image) else found[0]

    def keypoints(self, image, box: Sequence[float] | None = None, lang: Lang = "vi", **gen: Any):
        """COCO keypoints of the person in `box` (pixels), or of every person → list[Detection]."""
        answers = self.answer(image, "keypoints", lang, **gen) if box is None else self.answer(image, "keypoints_box", lang, box=box, **gen)
        people = [[d for d in a.detections if d.points] for a in _as_list(answers)]
        return people if _is_batch(image) else people[0]


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]
