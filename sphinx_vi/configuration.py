"""`SphinxViConfig`: the whole model as data — vision front end, language model, tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .text.tokenizer import TINY_TOKENIZER
from .vision.layout import VisualTokenLayout
from .vision.mixed import VisionConfig


class SphinxViConfig(PretrainedConfig):
    """Configuration of `SphinxViForConditionalGeneration`.

    vision: `VisionConfig` as a dict (encoders, common grid, 2×2 merge, views K and R).
    text_config: the causal LM's config (Mistral for Vistral); any `AutoModelForCausalLM` works.
    text_pretrained: where the LLM weights come from when building from parts (path or hub id).
    tokenizer: `builtin:tiny`, a local directory, or a hub id.
    chat_template: the prompt format the model was trained with (`text.templates`), or None for the
        tokenizer's own (a tokenizer without one is refused).
    image_token_id: id of `<image>` in the tokenizer; the processor expands it, the model fills it.
    """

    model_type = "sphinx_vi"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="mistral")}

    vision: dict | None = None
    if TYPE_CHECKING:
        text_config: PretrainedConfig  # always a config once __post_init__ has run
    else:
        text_config: dict | PretrainedConfig | None = None
    text_pretrained: str | None = None
    tokenizer: str = TINY_TOKENIZER
    chat_template: str | None = None
    image_token_id: int = 4
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.vision = VisionConfig.from_dict(self.vision or {}).to_dict()  # validates field names

    @property
    def vision_config(self) -> VisionConfig:
        return VisionConfig.from_dict(self.vision or {})

    @property
    def layout(self) -> VisualTokenLayout:
        """Views and visual tokens per image (`tokens_per_image` is what each `<image>` expands into)."""
        return self.vision_config.layout

    @property
    def pad_colour(self) -> tuple[int, int, int]:
        """Canvas colour for padding: `vision.pad_colour`, else the first encoder's normalisation mean in 0–255, rounded."""
        if self.vision_config.pad_colour is not None:
            r, g, b = self.vision_config.pad_colour
            return (int(r), int(g), int(b))
        encoders = self.vision_config.encoders
        mean = encoders[0].mean if encoders else (0.5, 0.5, 0.5)
        return tuple(int(round(255 * m)) for m in mean)  # type: ignore[return-value]

    @property
    def context_length(self) -> int:
        """Context length of the language model."""
        return int(getattr(self.text_config, "max_position_embeddings", 4096))
