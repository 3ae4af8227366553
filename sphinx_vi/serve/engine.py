"""transformers' serving engine and model manager, for one sphinx_vi model loaded through our factory.

transformers serve runs each model in a process of its own (its engine, spawned), the server's process keeping the
processor and configs. Here the engine's process loads the model strictly through `sphinx_vi.factory` (dtype, 4/8-bit,
the embedded models and presets) and generates through our `Generator` (the box-grammar logits processor, the
tokenizer's pad and EOS), run there by `EngineClient.submit`; the server's process reads the processor and config
without the weights.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.cli.serving.model_manager import EngineClient, ModelLoader, ModelManager
from transformers.cli.serving.utils import Detokenizer, GenerationState, ModelNotServedError, prompt_length

from .. import factory
from ..configuration import SphinxViConfig
from ..generation import DEFAULT_GENERATION, Generator
from .config import ServeConfig


def generate_answer(model: Any, generator: Generator, inputs: dict, generation_kwargs: dict, streamer: Any = None) -> list[int]:
    """In the engine's process: `generate` the project's way with the request's settings on top; the new token ids.
    The stop strings (the template's and the request's) come in `generation_kwargs`; `streamer` gets each token."""
    kwargs = {k: v for k, v in generation_kwargs.items() if v is not None}
    seed = kwargs.pop("seed", None)
    if seed is not None:
        torch.manual_seed(seed)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    options = generator.options(**kwargs, tokenizer=generator.processor.tokenizer)
    with torch.inference_mode():
        sequences = model.generate(**inputs, **options, streamer=streamer)
    return sequences[0, inputs["input_ids"].shape[-1]:].tolist()


class SphinxViLoader(ModelLoader):
    """Loads the configured model, whatever id transformers names it by: the weights in the engine's process, the
    config and processor (no weights) in the server's."""

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(device="cpu")  # transformers' loading settings go unused: the factory loads
        self.serve_config = config

    def load_config(self, model_id: str) -> tuple[SphinxViConfig, GenerationConfig]:
        """The model's config, and what requests generate with unless they say: greedy, the served answer length."""
        config, _ = factory.load_config_and_processor(self.serve_config.model)
        return config, GenerationConfig(**{**DEFAULT_GENERATION, "max_new_tokens": self.serve_config.max_new_tokens})

    def load_processor(self, model_id: str) -> Any:  # a SphinxViProcessor: the part of transformers' contract used here
        return factory.load_config_and_processor(self.serve_config.model)[1]

    def load_model_and_processor(self, model_id: str, on_progress: Any = None) -> tuple[Any, Any]:
        """In the engine's process: the model and, as its "processor", the `Generator` that `generate_answer` is
        given (its box grammar built once)."""
        cfg = self.serve_config
        loaded = factory.load_model(cfg.model, seed=cfg.seed, dtype=cfg.dtype, quantization=cfg.quantization)
        return loaded.model, Generator(loaded.model, loaded.processor)


class SphinxViEngine(EngineClient):
    """The model's engine, generating through `generate_answer` in its process."""

    async def generate_non_streaming(self, inputs: dict, generation_kwargs: dict) -> tuple[str, int, list[int]]:
        ids: list[int] = await self.submit(generate_answer, dict(inputs), generation_kwargs)
        return str(self.processor.decode(ids, skip_special_tokens=True)), prompt_length(inputs), ids

    def generate_streaming(self, inputs: dict, generation_kwargs: dict, response_parser: Any = None) -> tuple[asyncio.Queue, Detokenizer]:
        return self.submit_streaming(generate_answer, dict(inputs), generation_kwargs)


class SphinxViModelManager(ModelManager):
    """Serves exactly the configured model, under its served name; its engine starts now and never stops idle."""

    def __init__(self, config: ServeConfig, generation_state: GenerationState) -> None:
        super().__init__(loader=SphinxViLoader(config), generation_state=generation_state, model_timeout=-1)
        self.engine = SphinxViEngine(config.name, self.loader, generation_state)
        self.engines[config.name] = self.engine
        self.engine.start()

    def get_engine(self, model: str | None) -> EngineClient:
        if model is not None and model != self.engine.model_id:
            raise ModelNotServedError(f"model {model!r} is not served here; this server serves {self.engine.model_id!r}")
        return self.engine

    def list_models(self, cache_dir: str | None = None) -> list[dict]:
        return [{"id": self.engine.model_id, "object": "model", "created": 0, "owned_by": "sphinx_vi", "status": {"value": "loaded"}}]
