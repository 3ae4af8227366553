"""`SphinxViProcessor`: images → views, text → ids with each `<image>` expanded to the model's token count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerBase

from .configuration import SphinxViConfig
from .images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .text.templates import get_template, template_of
from .text.tokenizer import load_tokenizer
from .text.tokens import IMAGE_TOKEN
from .views import make_views
from .vision.layout import VisualTokenLayout

PROCESSOR_CONFIG = "processor_config.json"


class PromptTooLongError(ValueError):
    """A prompt (with its visual tokens) longer than the language model's context."""


@dataclass(frozen=True)
class ProcessorSettings:
    """Everything besides the tokenizer that turns an image into model input.

    All but `max_pixels` follow from the model's config (`from_model_config`): a saved processor
    stores only `max_pixels` and reads the rest from the `config.json` beside it.
    """

    layout: VisualTokenLayout  # views (K, R) and the visual tokens each `<image>` expands into
    pad_colour: tuple[int, int, int]  # canvas colour: the first encoder's mean colour
    context_length: int = 4096  # prompts longer than this are refused
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images are refused before decoding

    @classmethod
    def from_model_config(cls, config: SphinxViConfig, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ProcessorSettings:
        return cls(layout=config.layout, pad_colour=config.pad_colour, context_length=config.context_length,
                   max_pixels=max_pixels)

    @property
    def tokens_per_image(self) -> int:
        return self.layout.tokens_per_image


# Keys older checkpoints wrote to processor_config.json; now derived from config.json (checked, not read).
_DERIVED_KEYS = {"views_grid": lambda s: s.layout.views.grid, "resolution": lambda s: s.layout.views.resolution,
                 "tokens_per_image": lambda s: s.layout.tokens_per_image, "pad_colour": lambda s: list(s.pad_colour),
                 "context_length": lambda s: s.context_length}


class SphinxViProcessor:
    """Pairs the tokenizer with the view builder.

    `processor(text, images)` → BatchFeature(input_ids, attention_mask, pixel_values (N, V, 3, R, R)).
    `images` lists the images in the order their `<image>` placeholders appear across `text`;
    images already loaded by `load` are used as they are (an image is decoded once per call).
    """

    image_token = IMAGE_TOKEN

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: ProcessorSettings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @classmethod
    def from_model_config(cls, config: SphinxViConfig, tokenizer: PreTrainedTokenizerBase | None = None,
                          allow_download: bool = False) -> SphinxViProcessor:
        if tokenizer is None:
            tokenizer = load_tokenizer(config.tokenizer, allow_download=allow_download, template=config.chat_template)
        elif config.chat_template is not None:  # the format the model was trained with, on the given tokenizer
            tokenizer.chat_template = get_template(config.chat_template).jinja
        return cls(tokenizer, ProcessorSettings.from_model_config(config))

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Text besides EOS that ends an answer in this tokenizer's template (`text.templates`)."""
        template = template_of(self.tokenizer.chat_template)
        return template.stop_strings if template is not None else ()

    # --- images -------------------------------------------------------------------------------
    def load(self, image: ImageInput) -> Image.Image:
        """Any image input → upright RGB (`images.load_image`); an image it already loaded comes back as is."""
        return load_image(image, max_pixels=self.settings.max_pixels)

    def image_to_views(self, image: ImageInput) -> torch.Tensor:
        """One image → (V, 3, R, R) views in [0, 1]."""
        return make_views(self.load(image), self.settings.layout.views, self.settings.pad_colour)

    # --- text ---------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))

    def expand_image_tokens(self, ids: Sequence[int]) -> list[int]:
        """Each `<image>` id → `tokens_per_image` copies of it."""
        out: list[int] = []
        for tok in ids:
            if tok == self.image_token_id:
                out.extend([tok] * self.settings.tokens_per_image)
            else:
                out.append(tok)
        return out

    def __call__(
        self,
        text: str | Sequence[str],
        images: Sequence[ImageInput] | ImageInput | None = None,
        padding_side: str = "left",
        add_special_tokens: bool = False,
    ) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        if images is None:
            image_list: list[ImageInput] = []
        elif isinstance(images, (list, tuple)):
            image_list = [im for item in images for im in (item if isinstance(item, (list, tuple)) else [item])]
        else:
            image_list = [images]  # type: ignore[list-item]  # one image (not a sequence)
        n_placeholders = sum(t.count(IMAGE_TOKEN) for t in texts)
        if n_placeholders != len(image_list):
            raise ValueError(
                f"text has {n_placeholders} {IMAGE_TOKEN} placeholder(s) but {len(image_list)} image(s) were given"
            )
        rows = [
            self.expand_image_tokens(self.tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"]) for t in texts
        ]
        longest = max(len(r) for r in rows)
        if longest > self.settings.context_length:
            raise PromptTooLongError(
                f"prompt is {longest} tokens (visual tokens included) but the model's context is "
                f"{self.settings.context_length}; shorten the text or the history, or use fewer images"
            )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(longest - len(row), longest) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, span] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if image_list:
            data["pixel_values"] = torch.stack([self.image_to_views(im) for im in image_list])  # (N, V, 3, R, R)
        return BatchFeature(data)

    def batch_decode(self, ids: torch.Tensor, **kw: Any) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True, **kw)

    def decode(self, ids: torch.Tensor | list[int], **kw: Any) -> str:
        """One row of ids → text (special tokens dropped unless `skip_special_tokens=False`)."""
        return str(self.tokenizer.decode(ids, **{"skip_special_tokens": True, **kw}))

    # --- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG).write_text(json.dumps({"max_pixels": self.settings.max_pixels}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: SphinxViConfig | None = None) -> SphinxViProcessor:
        """The tokenizer and settings saved in `directory`; the layout from `config` (already read by the
        caller) or else from the directory's model `config.json`."""
        directory = Path(directory)
        saved = json.loads((directory / PROCESSOR_CONFIG).read_text())
        settings = ProcessorSettings.from_model_config(config or SphinxViConfig.from_pretrained(directory),
                                                       max_pixels=saved.pop("max_pixels", DEFAULT_MAX_PIXELS))
        for key, value in saved.items():
            if key not in _DERIVED_KEYS:
                raise ValueError(f"{directory / PROCESSOR_CONFIG}: unknown setting {key!r}")
            if _DERIVED_KEYS[key](settings) != (list(value) if isinstance(value, (list, tuple)) else value):
                raise ValueError(f"{directory / PROCESSOR_CONFIG}: {key} = {value!r} disagrees with config.json "
                                 f"({_DERIVED_KEYS[key](settings)!r})")
        return cls(load_tokenizer(str(directory)), settings)
