"""The one inference path: conversation → prompt ids → `generate` → answer texts.

Everything that asks the model something decodes through a `Generator`: the API (`SphinxVi`),
chat sessions, evaluation, the tool chain and the studio. It holds the three facts they share:
how a prompt and its history become chat messages (`build_messages`), the `generate` options
(greedy, 256 new tokens, the tokenizer's pad and EOS, the box-grammar logits processor built
once per model), and how new tokens become text (`decode_new`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import LogitsProcessorList

from .grounding.constraint import BoxGrammarConstraint
from .modeling import SphinxViForConditionalGeneration
from .processing import SphinxViProcessor
from .text.tokens import IMAGE_TOKEN

Message = dict[str, str]
History = Sequence[tuple[str, str] | Message]
DEFAULT_GENERATION: dict[str, Any] = {"max_new_tokens": 256, "do_sample": False}


def build_messages(prompt: str, history: History | None = None) -> list[Message]:
    """Chat messages for `prompt` after `history` ((user, assistant) pairs or role/content dicts);
    the first user turn gets the `<image>` placeholder unless some turn already has one."""
    messages: list[Message] = []
    for turn in history or []:
        if isinstance(turn, dict):
            messages.append({"role": turn["role"], "content": turn["content"]})
        else:
            user, assistant = turn
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": prompt})
    if IMAGE_TOKEN not in "".join(m["content"] for m in messages):
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] = f"{IMAGE_TOKEN}\n{first_user['content']}"
    return messages


def as_pairs(history: History | None) -> list[tuple[str, str]] | None:
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


class Generator:
    """A model and its processor, decoding answers the one way the project decodes them.

    >>> gen = Generator(model, processor)
    >>> gen.answer([image], ["Có gì trong ảnh?"])           # -> ["..."]
    >>> gen.generate([image], [[{"role": "user", "content": "<image>\\nHỏi"}]], max_new_tokens=32)
    """

    def __init__(self, model: SphinxViForConditionalGeneration, processor: SphinxViProcessor) -> None:
        self.model = model
        self.processor = processor
        self._box_grammar: BoxGrammarConstraint | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def box_grammar(self) -> BoxGrammarConstraint:
        """The logits processor that keeps text inside `[`…`]` to coordinates (built once)."""
        if self._box_grammar is None:
            vocab = int(self.model.get_output_embeddings().weight.shape[0])  # type: ignore[index]  # an nn.Linear head
            self._box_grammar = BoxGrammarConstraint(self.processor.tokenizer, vocab)
        return self._box_grammar

    def options(self, **gen: Any) -> dict[str, Any]:
        """`generate` options for an answer: the defaults, the tokenizer's pad and EOS, and the box
        grammar as the last logits processor unless `constrain_boxes=False` is given."""
        kwargs = {**DEFAULT_GENERATION, **gen}
        constrain = kwargs.pop("constrain_boxes", True)
        tok = self.processor.tokenizer
        kwargs.setdefault("pad_token_id", tok.pad_token_id)
        kwargs.setdefault("eos_token_id", tok.eos_token_id)
        if self.processor.stop_strings and "stop_strings" not in kwargs:  # the template's end of answer (SPHINX: "\n###")
            kwargs.update(stop_strings=list(self.processor.stop_strings), tokenizer=tok)
        if constrain:
            kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), self.box_grammar])
        return kwargs

    def decode_new(self, sequences: torch.Tensor, prompt_length: int) -> list[str]:
        """(B, L + n) generated ids → the n new tokens of each row as stripped text, cut at the template's stop string."""
        texts = self.processor.tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)
        return [self.finish(t) for t in texts]

    def finish(self, text: str) -> str:
        """Decoded answer text (whole or streamed so far) cut at the template's stop string and stripped."""
        for stop in self.processor.stop_strings:
            text = text.split(stop, 1)[0]
        return text.strip()

    def generate(self, images: Sequence[Image.Image], conversations: Sequence[list[Message]], **gen: Any) -> list[str]:
        """One answer per conversation, batched; `images` are the loaded images of every `<image>`, in order."""
        texts = [self.processor.apply_chat_template(c) for c in conversations]
        inputs = self.processor(texts, list(images)).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.options(**gen))
        return self.decode_new(out, inputs["input_ids"].shape[1])

    def answer(self, images: Sequence[Image.Image], prompts: Sequence[str], history: History | None = None,
               **gen: Any) -> list[str]:
        """The answer to each prompt about its image (one image per prompt), after a shared `history`."""
        return self.generate(images, [build_messages(p, history) for p in prompts], **gen)
