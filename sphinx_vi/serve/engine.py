"""transformers' serving `ModelManager`, holding one sphinx_vi checkpoint loaded through our factory.

transformers serve loads models through its Auto classes and reads a model's modality from its
built-in class lists; a sphinx_vi checkpoint loads strictly through `sphinx_vi.factory` instead
(dtype, 4/8-bit, the embedded models and presets) and is an image-text-to-text model.
"""

from __future__ import annotations

from typing import Any

from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.utils import Modality

from .. import factory
from ..generation import DEFAULT_GENERATION, Generator
from .config import ServeConfig


class SphinxViModelManager(ModelManager):
    """Serves exactly the configured model, under its served name; loaded once, never unloaded."""

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(device="cpu", dtype="auto", model_timeout=-1)
        loaded = factory.load_model(config.model, seed=config.seed, dtype=config.dtype, quantization=config.quantization)
        self.generator = Generator(loaded.model, loaded.processor)
        gen = loaded.model.generation_config
        gen.update(**{**DEFAULT_GENERATION, "max_new_tokens": config.max_new_tokens})
        gen.pad_token_id = loaded.processor.tokenizer.pad_token_id
        gen.eos_token_id = loaded.processor.tokenizer.eos_token_id
        self.name = config.name
        self.force_model = config.name
        self.loaded_models = {}  # the parent's cache of Hub models stays empty: ours is held by the generator

    def process_model_name(self, model_id: str) -> str:  # type: ignore[override]  # a name, not a Hub repo
        return model_id

    def load_model_and_processor(self, model_id_and_revision: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if model_id_and_revision != self.name:
            raise KeyError(model_id_and_revision)
        return self.generator.model, self.generator.processor

    @staticmethod
    def get_model_modality(model: Any, processor: Any = None) -> Modality:
        return Modality.VLM

    def list_models(self, cache_dir: str | None = None) -> list[dict]:
        return [{"id": self.name, "object": "model", "created": 0, "owned_by": "sphinx_vi", "status": {"value": "loaded"}}]

    def shutdown(self) -> None:
        """The served model stays: transformers' /reset would unload it, and the server has no other."""
