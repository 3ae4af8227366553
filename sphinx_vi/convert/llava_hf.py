"""A transformers LLaVA checkpoint directory (`LlavaForConditionalGeneration.save_pretrained`) → a sphinx_vi checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, LlavaForConditionalGeneration

from ..factory import save_checkpoint
from ..processing import SphinxViProcessor
from ..text.templates import MissingChatTemplateError, get_template
from ..text.tokenizer import ensure_image_token
from ..weights import check_complete
from .llava import from_llava
from .llava_vision import UnsupportedLlavaError


def _processor_template(src: Path) -> str | None:
    """The chat template a transformers processor saved beside the model (chat_template.jinja / .json)."""
    if (src / "chat_template.jinja").exists():
        return (src / "chat_template.jinja").read_text()
    if (src / "chat_template.json").exists():
        return json.loads((src / "chat_template.json").read_text()).get("chat_template")
    return None


def convert_llava_hf(src: str | Path, out: str | Path, *, chat_template: str | None = None,
                     tokenizer: str | Path | None = None) -> Path:
    """Convert transformers' LLaVA in `src` to a sphinx_vi checkpoint in `out` (same logits; tested).

    The prompt format: `chat_template` (a `text.templates` name), else the tokenizer's or the
    processor's own template in `src`; none of them is an error.
    """
    src, out = Path(src), Path(out)
    loaded: Any = LlavaForConditionalGeneration.from_pretrained(src, local_files_only=True, output_loading_info=True)
    llava, info = loaded
    check_complete(f"{src} (LlavaForConditionalGeneration)", info["missing_keys"], info["unexpected_keys"])
    tok = AutoTokenizer.from_pretrained(str(tokenizer or src), local_files_only=True)
    if ensure_image_token(tok) != llava.config.image_token_id:
        raise UnsupportedLlavaError(f"{src}: the tokenizer's <image> id {tok.convert_tokens_to_ids('<image>')} is not the "
                                    f"model's image_token_id {llava.config.image_token_id}")
    if chat_template is not None:
        tok.chat_template = get_template(chat_template).jinja
    elif tok.chat_template is None:
        tok.chat_template = _processor_template(src)
    if tok.chat_template is None:
        raise MissingChatTemplateError(f"{src}: no chat template in its tokenizer or processor; name the one it was trained "
                                       "with (chat_template= / --template vicuna_v1 for LLaVA-1.5)")
    model = from_llava(llava, tokenizer=str(tokenizer or src), chat_template=chat_template)
    return save_checkpoint(out, model, SphinxViProcessor.from_model_config(model.config, tokenizer=tok))
