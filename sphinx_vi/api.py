"""The Python API: `SphinxVi` answers in text and returns grounded objects as `Detection`s."""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union, overload

import torch
from PIL import Image
from transformers import LogitsProcessorList

from .configuration import SphinxViConfig
from .grounding import Detection, deduplicate, format_box, parse
from .grounding.constraint import BoxGrammarConstraint
from .images import ImageInput
from .modeling import SphinxViForConditionalGeneration
from .presets import list_presets, preset_config_dict
from .processing import SphinxViProcessor
from .prompts import Lang, task_prompt
from .session import ChatSession, image_key
from .text.tokenizer import IMAGE_TOKEN

# Checkpoints shipped inside the package, loadable by name with no path.
EMBEDDED_MODELS = {"tiny-shapes": Path(__file__).resolve().parent / "assets" / "models" / "tiny-shapes"}

History = Sequence[Union[tuple[str, str], dict[str, str]]]
DEFAULT_GENERATION = {"max_new_tokens": 256, "do_sample": False}


def _is_batch(image: Any) -> bool:
    return isinstance(image, (list, tuple))


class SphinxVi:
    """A SPHINX-style model with its processor.

    >>> vi = SphinxVi.from_preset("tiny")
    >>> vi.detect("street.jpg", "người")         # -> list[Detection], boxes in pixels
    >>> vi.ground("street.jpg", "chiếc xe màu đỏ")  # -> Detection | None
    """

    def __init__(self, model: SphinxViForConditionalGeneration, processor: SphinxViProcessor) -> None:
        self.model = model.eval()
        self.processor = processor
        self._session: ChatSession | None = None  # the last conversation `chat` continued (its KV cache)
        self._box_grammar: BoxGrammarConstraint | None = None

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_preset(
        cls,
        name: str,
        seed: int = 0,
        *,
        load_weights: bool = False,
        allow_download: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> "SphinxVi":
        """Build preset `name`: random init from `seed`, or (`load_weights`) its parts' checkpoints."""
        config = SphinxViConfig(**preset_config_dict(name))
        processor = SphinxViProcessor.from_model_config(config, allow_download=bool(allow_download))
        if load_weights:
            model = SphinxViForConditionalGeneration.from_parts(config, allow_download=allow_download)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = SphinxViForConditionalGeneration(config)
        if len(processor.tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(processor.tokenizer))
        return cls(model.to(device), processor)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> "SphinxVi":
        """Load a directory written by `save_pretrained`, or an embedded model by name (`tiny-shapes`)."""
        directory = Path(path).expanduser()
        if not directory.exists() and str(path) in EMBEDDED_MODELS:
            directory = EMBEDDED_MODELS[str(path)]
            if not (directory / "config.json").exists():
                raise FileNotFoundError(
                    f"the embedded model {path!r} is not built in this checkout; build it with "
                    "`python -m sphinx_vi.train.learn --embed` (about an hour on a CPU)"
                )
        if not (directory / "config.json").exists():
            raise FileNotFoundError(
                f"{path}: not a sphinx_vi checkpoint directory (no config.json); presets: {', '.join(list_presets())}"
            )
        model = SphinxViForConditionalGeneration.from_pretrained(directory)
        return cls(model.to(device), SphinxViProcessor.from_pretrained(directory))

    @classmethod
    def load(cls, name_or_path: str, *, seed: int = 0) -> "SphinxVi":
        """A checkpoint directory if one exists at that path, else a preset of that name."""
        if Path(name_or_path).expanduser().exists() or name_or_path in EMBEDDED_MODELS:
            return cls.from_pretrained(name_or_path)
        if name_or_path in list_presets():
            return cls.from_preset(name_or_path, seed=seed)
        raise FileNotFoundError(f"{name_or_path!r} is neither a checkpoint directory nor a preset ({', '.join(list_presets())})")

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- decoding -------------------------------------------------------------------------------
    @property
    def box_grammar(self) -> BoxGrammarConstraint:
        """The logits processor that keeps text inside `[`…`]` to coordinates (built once)."""
        if self._box_grammar is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._box_grammar = BoxGrammarConstraint(self.processor.tokenizer, vocab)
        return self._box_grammar

    def generation_kwargs(self, **gen: Any) -> dict[str, Any]:
        """`generate` options for an answer: the API's defaults, the tokenizer's pad and EOS, and
        the box grammar as a logits processor unless `constrain_boxes=False` is given."""
        kwargs = {**DEFAULT_GENERATION, **gen}
        constrain = kwargs.pop("constrain_boxes", True)
        tok = self.processor.tokenizer
        kwargs.setdefault("pad_token_id", tok.pad_token_id)
        kwargs.setdefault("eos_token_id", tok.eos_token_id)
        if constrain:
            kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), self.box_grammar])
        return kwargs

    # --- chat -----------------------------------------------------------------------------------
    def _messages(self, prompt: str, history: History | None) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        for turn in history or []:
            if isinstance(turn, dict):
                messages.append({"role": turn["role"], "content": turn["content"]})
            else:
                user, assistant = turn
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": prompt})
        first_user = next(m for m in messages if m["role"] == "user")
        if IMAGE_TOKEN not in "".join(m["content"] for m in messages):
            first_user["content"] = f"{IMAGE_TOKEN}\n{first_user['content']}"
        return messages

    def _generate(self, images: list[Image.Image], prompts: list[str], history: History | None, **gen: Any) -> list[str]:
        texts = [self.processor.apply_chat_template(self._messages(p, history)) for p in prompts]
        inputs = self.processor(texts, images).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generation_kwargs(**gen))
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _prepare(self, image, prompt: str | Sequence[str] | Callable[[Image.Image], str]):
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
        pairs = _as_pairs(history)
        if not _is_batch(image) and isinstance(prompt, str) and pairs is not None and generate_kwargs.get("num_beams", 1) == 1:
            loaded = self.processor.load(image)
            s = self._session
            if s is None or s.history != pairs or s.key != image_key(loaded):
                s = ChatSession(self, loaded, pairs)
            answer = s.send(prompt, **generate_kwargs)
            self._session = s
            return answer
        loaded, prompts = self._prepare(image, prompt)
        answers = self._generate(loaded, prompts, history, **generate_kwargs)
        return answers if _is_batch(image) else answers[0]

    def start_chat(self, image: ImageInput, history: History | None = None) -> ChatSession:
        """A conversation about `image` that keeps its KV cache between turns: `.send(prompt)`."""
        pairs = _as_pairs(history)
        if pairs is None:
            raise ValueError("history must alternate user and assistant turns")
        return ChatSession(self, self.processor.load(image), pairs)

    # --- grounding tasks ------------------------------------------------------------------------
    def ask(self, image, prompt: str | Callable[[Image.Image], str], **generate_kwargs: Any):
        """Answer `prompt` and parse it: GroundedAnswer(text, detections, warnings) (a list for a batch).

        `prompt` may be a function of the loaded image (to write a box in its coordinates).
        """
        loaded, prompts = self._prepare(image, prompt)
        answers = self._generate(loaded, prompts, None, **generate_kwargs)
        results = []
        for text, im in zip(answers, loaded):
            parsed = parse(text, im.size)
            results.append(GroundedAnswer(text, _dedup(parsed.detections), parsed.warnings, im.size))
        return results if _is_batch(image) else results[0]

    def detect(self, image, query: str, lang: Lang | Literal["auto"] = "auto", **gen: Any):
        """All `query` objects → list[Detection] (a list of lists for a batch of images)."""
        answers = self.ask(image, task_prompt("detect", lang, category=query), **gen)
        return [a.detections for a in answers] if _is_batch(image) else answers.detections

    def ground(self, image, expression: str, lang: Lang | Literal["auto"] = "auto", **gen: Any):
        """The region `expression` describes → Detection or None (a list for a batch)."""
        answers = self.ask(image, task_prompt("rec", lang, expression=expression), **gen)
        found = [next((d for d in a.detections if d.box is not None), None) for a in _as_list(answers)]
        for det in found:
            if det is not None:
                det.label = expression
        return found if _is_batch(image) else found[0]

    def keypoints(self, image, box: Sequence[float] | None = None, lang: Lang = "vi", **gen: Any):
        """COCO keypoints of the person in `box` (pixels), or of every person → list[Detection]."""
        if box is None:
            prompt: str | Callable[[Image.Image], str] = task_prompt("keypoints", lang)
        else:
            prompt = lambda im: task_prompt("keypoints_box", lang, box=format_box(box, im.size))  # noqa: E731
        answers = self.ask(image, prompt, **gen)
        people = [[d for d in a.detections if d.points] for a in _as_list(answers)]
        return people if _is_batch(image) else people[0]


@dataclass
class GroundedAnswer:
    """The model's text, what the parser read from it (pixels of the image), and what it could not."""

    text: str
    detections: list[Detection]
    warnings: list[str]
    image_size: tuple[int, int]


def _as_pairs(history: History | None) -> list[tuple[str, str]] | None:
    """History as (user, assistant) pairs, or None when it does not alternate that way."""
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in history or []:
        if not isinstance(turn, dict):
            if pending is not None:
                return None
            user, assistant = turn
            pairs.append((user, assistant))
        elif turn.get("role") == "user" and pending is None:
            pending = turn["content"]
        elif turn.get("role") == "assistant" and pending is not None:
            pairs.append((pending, turn["content"]))
            pending = None
        else:
            return None
    return pairs if pending is None else None


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def _dedup(detections: list[Detection]) -> list[Detection]:
    boxed = [d for d in detections if d.box is not None]
    keep = set(deduplicate([d.box for d in boxed]))  # type: ignore[misc]
    return [d for i, d in enumerate(boxed) if i in keep] + [d for d in detections if d.box is None]
