"""Released checkpoints → sphinx_vi checkpoint directories: `python -m sphinx_vi convert --from FORMAT SRC --out DIR`.

| format | source | module |
| --- | --- | --- |
| `llava` | LLaVA-1.5 in the original layout (`LlavaLlamaForCausalLM` shards + the CLIP tower's repository) | `llava_original` |
| `vistral-v` | Vistral-V in the original layout (its SigLIP tower inside) | `llava_original` |
| `llava-hf` | transformers' `LlavaForConditionalGeneration` directory | `llava_hf` |
| `sphinx` | SPHINX / SPHINX-1k / SPHINX-v2-1k: LLaMA2-Accessory's `consolidated.NN-of-MM.model.pth` | `sphinx` |
"""

from __future__ import annotations

from pathlib import Path

from .llava import from_llava, sphinx_vi_config_from_llava
from .llava_vision import UnsupportedLlavaError

FORMATS = ("llava", "vistral-v", "llava-hf", "sphinx")


def convert(source_format: str, src: str | Path, out: str | Path, *, vision_tower: str | Path | None = None,
            tokenizer: str | Path | None = None, chat_template: str | None = None, preset: str = "sphinx-1k") -> Path:
    """Convert `src` (a checkpoint of `source_format`) into a sphinx_vi checkpoint directory `out`.

    `preset` (sphinx): the architecture the checkpoint has (sphinx-1k, sphinx-v2-1k)."""
    if source_format in ("llava", "vistral-v"):
        from .llava_original import convert_llava_original

        if chat_template is not None:
            raise ValueError(f"--template: {source_format} checkpoints keep the format they were trained with")
        return convert_llava_original(src, out, source_format, vision_tower=vision_tower, tokenizer=tokenizer)
    if source_format == "sphinx":
        from .sphinx import convert_sphinx

        if tokenizer is None:
            raise ValueError("--tokenizer: SPHINX checkpoints hold no tokenizer; pass the LLaMA-2 tokenizer directory")
        return convert_sphinx(src, out, tokenizer=tokenizer, preset=preset)
    if source_format == "llava-hf":
        from .llava_hf import convert_llava_hf

        return convert_llava_hf(src, out, chat_template=chat_template, tokenizer=tokenizer)
    raise KeyError(f"unknown source format {source_format!r}; known: {', '.join(FORMATS)}")


__all__ = ["FORMATS", "UnsupportedLlavaError", "convert", "from_llava", "sphinx_vi_config_from_llava"]
