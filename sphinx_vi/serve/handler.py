"""`/v1/chat/completions` for a sphinx_vi model: transformers' chat handler with our prompt, grammar and boxes.

transformers' `ChatCompletionHandler` validates the request, maps its parameters to `generate`'s, has the engine
generate and formats the OpenAI responses and SSE chunks. This handler changes what goes in (the image policy, our
chat template and processor, the template's stop strings, the context bound; the engine adds the box grammar) and
adds what comes out: per choice, a `grounding` field with the detections in pixels of the request's image.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from transformers import GenerationConfig
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.utils import GenerationState, ModelNotServedError

from ..grounding import read_answer
from ..images import ImageTooLargeError
from ..processing import PromptTooLongError, SphinxViProcessor
from .config import ServeConfig
from .engine import SphinxViModelManager
from .messages import MessageError, read_messages
from .request_images import RequestImageError, load_request_image
from .sampling import check_generation_params
from .stops import StopCutter


def grounding(text: str, image: Image.Image | None) -> dict[str, Any] | None:
    """The extension field of one choice: detections (pixels of the request's image) and parse warnings."""
    if image is None:
        return None
    answer = read_answer(text, image.size)
    return {"detections": [d.to_dict() for d in answer.detections], "warnings": answer.warnings, "image_size": list(answer.image_size)}


def _stops(body: dict[str, Any], template_stops: tuple[str, ...]) -> list[str]:
    requested = body.get("stop")
    if requested is None:
        extra: list[str] = []
    elif isinstance(requested, str):
        extra = [requested]
    elif isinstance(requested, list) and all(isinstance(s, str) for s in requested):
        extra = list(requested)
    else:
        raise ValueError("stop: expected a string or a list of strings")
    return [*template_stops, *extra]


class GroundedChatHandler(ChatCompletionHandler):
    def __init__(self, manager: SphinxViModelManager, state: GenerationState, config: ServeConfig) -> None:
        super().__init__(model_manager=manager, generation_state=state)
        self.config = config

    def _load_image(self, url: str) -> Image.Image:
        return load_request_image(url, root=self.config.image_root, max_pixels=self.config.max_image_pixels)

    def _prepare(self, processor: SphinxViProcessor, body: dict[str, Any]) -> tuple[dict[str, Any], Image.Image | None, list[str]]:
        """The request → generate inputs, its image, its stop strings (runs off the event loop: decoding is CPU work)."""
        conversation, image = read_messages(body.get("messages"), self._load_image, self.config.max_prompt_chars)
        inputs = dict(processor(processor.apply_chat_template(conversation), [image] if image is not None else None))
        return inputs, image, _stops(body, processor.stop_strings)

    def _build_generation_kwargs(self, body: dict, model_generation_config: GenerationConfig) -> dict:
        """transformers' mapping of the request's parameters, but for `stop` (`handle_request` adds it to the template's),
        with the served answer length unless the request names one, and sampling when asked for."""
        kwargs = super()._build_generation_kwargs({k: v for k, v in body.items() if k != "stop"}, model_generation_config)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            kwargs["max_new_tokens"] = model_generation_config.max_new_tokens
        if body.get("temperature") is not None and float(body["temperature"]) > 0:
            kwargs["do_sample"] = True
        return kwargs

    async def handle_request(self, body: dict, request_id: str) -> StreamingResponse | JSONResponse:
        self._validate_request(body)
        try:
            engine = self.model_manager.get_engine(body.get("model"))
        except ModelNotServedError as err:
            raise HTTPException(404, str(err)) from None
        processor: SphinxViProcessor = engine.processor  # type: ignore[assignment]  # ours, see SphinxViLoader
        try:
            check_generation_params(body, len(processor.tokenizer), self.config.max_beams)
            inputs, image, stops = await asyncio.to_thread(self._prepare, processor, body)
            kwargs = self._build_generation_kwargs(body, engine.generation_config)
        except ImageTooLargeError as err:
            raise HTTPException(413, str(err)) from None
        except (MessageError, RequestImageError, PromptTooLongError, ValueError, TypeError) as err:
            raise HTTPException(400, str(err)) from None
        prompt_length = int(inputs["input_ids"].shape[1])
        room = processor.settings.context_length - prompt_length
        if room < 1:
            raise HTTPException(400, f"prompt is {prompt_length} tokens, the model's whole context; nothing is left for the answer")
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], room)
        if stops:
            kwargs["stop_strings"] = stops
        if body.get("stream"):
            response = self._streaming(request_id, engine, inputs, kwargs, stream_options=body.get("stream_options"))
            response.body_iterator = _with_grounding(response.body_iterator, stops, image)
            return response
        reply = await self._non_streaming(request_id, engine, inputs, kwargs)
        payload = json.loads(bytes(reply.body))
        for choice in payload.get("choices", []):
            cutter = StopCutter(stops)
            cutter.feed(choice["message"].get("content") or "")
            choice["message"]["content"] = cutter.text.strip()
            choice["grounding"] = grounding(choice["message"]["content"], image)
        return JSONResponse(payload)


async def _with_grounding(events: AsyncIterable[str | bytes | memoryview], stops: list[str], image: Image.Image | None) -> AsyncIterator[str]:
    """transformers' SSE chunks, the content cut at the stop strings and the final chunk carrying `grounding`."""
    cutter = StopCutter(stops)
    started = False  # the answer's leading space is not sent, as the non-streaming answer is stripped
    async for block in events:
        text = block if isinstance(block, str) else bytes(block).decode()
        out = []
        for event in text.split("\n\n"):
            if not event.startswith("data: "):
                continue
            try:
                data = json.loads(event[len("data: "):])
            except json.JSONDecodeError:
                out.append(event + "\n\n")  # [DONE] and the like pass through
                continue
            for choice in data.get("choices") or []:
                delta = choice.setdefault("delta", {})
                if delta.get("content"):
                    delta["content"] = cutter.feed(delta["content"])
                if choice.get("finish_reason"):
                    delta["content"] = (delta.get("content") or "") + cutter.finish()
                    choice["grounding"] = grounding(cutter.text.strip(), image)
                if "content" in delta and not started:
                    delta["content"] = delta["content"].lstrip()
                    started = bool(delta["content"])
            out.append(f"data: {json.dumps(data, ensure_ascii=False)}\n\n")
        if out:
            yield "".join(out)
