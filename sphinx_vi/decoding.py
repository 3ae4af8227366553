"""A lean greedy decoding loop for the common case: the same ids as `GenerationMixin.generate`, less per-step work.

`generate` rebuilds its logits processors and stopping criteria per call and runs them as
general tensors ops every step (`torch.isin` over the whole vocabulary for suppressed tokens and
`min_new_tokens`); at small and medium sizes that overhead is comparable to the model itself.
Greedy decoding with `max_new_tokens`, `min_new_tokens`, EOS, suppressed tokens, left padding,
an existing KV cache and given `logits_processor`s (called like `generate` calls them, after the
built-in ones) needs none of it. Any other option goes to `transformers`' generate.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.generation.utils import GenerateDecoderOnlyOutput

# Options the lean loop implements exactly; anything else (sampling, beams, streamers,
# scores, ...) is handled by `GenerationMixin.generate`.
SUPPORTED = {"max_new_tokens", "min_new_tokens", "do_sample", "num_beams", "pad_token_id", "eos_token_id",
             "suppress_tokens", "cache", "return_dict_in_generate", "use_cache", "inputs_embeds",
             "logits_processor"}


# Fields of a model's generation config that add logits processors or stopping criteria.
_PROCESSOR_FIELDS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "bad_words_ids",
                     "forced_bos_token_id", "forced_eos_token_id", "begin_suppress_tokens", "sequence_bias",
                     "exponential_decay_length_penalty", "max_time", "stop_strings", "min_length", "guidance_scale",
                     "watermarking_config", "renormalize_logits", "remove_invalid_values", "min_new_tokens")
_NEUTRAL = GenerationConfig()


def lean_greedy_applies(kwargs: dict[str, Any], config: GenerationConfig) -> bool:
    """True when `kwargs` (over the model's generation config) ask for plain greedy decoding
    with an explicit `max_new_tokens`."""
    if not set(kwargs) <= SUPPORTED or kwargs.get("max_new_tokens") is None or kwargs.get("use_cache", True) is False:
        return False
    if any(getattr(config, f, None) != getattr(_NEUTRAL, f, None) for f in _PROCESSOR_FIELDS):
        return False
    return not kwargs.get("do_sample", config.do_sample) and kwargs.get("num_beams", config.num_beams or 1) == 1


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


@torch.inference_mode()
def lean_greedy(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: GenerationConfig,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any):
    """Greedy decoding on `model.language_model` from (B, L) prompt ids (and their merged embeddings).

    Returns (B, L + n) ids like `generate` (finished rows padded with `pad_token_id`), or a
    `GenerateDecoderOnlyOutput` with `sequences` and `cache` when asked.
    """
    lm = model.language_model
    B, _L = input_ids.shape
    max_new = int(kwargs["max_new_tokens"])
    min_new = int(kwargs.get("min_new_tokens") or 0)
    eos = _ids(kwargs.get("eos_token_id", config.eos_token_id))
    suppress = _ids(kwargs.get("suppress_tokens", config.suppress_tokens))
    pad = kwargs.get("pad_token_id", config.pad_token_id)
    pad = pad if pad is not None else (eos[0] if eos else 0)
    processors = list(kwargs.get("logits_processor") or [])
    cache = kwargs.get("cache")
    cache = cache if cache is not None else DynamicCache()
    cached = cache.get_seq_length()
    device = input_ids.device

    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    padded = not bool(mask.all())
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # (B, L), as generate computes them
    if inputs_embeds is None:
        inputs_embeds = model.embed_inputs(input_ids[:, cached:])
    else:
        inputs_embeds = inputs_embeds[:, cached:]
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask if padded else None, position_ids=positions[:, cached:],
             cache=cache, use_cache=True, logits_to_keep=1)
    eos_t = torch.tensor(eos, device=device) if eos else None
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    last_pos = positions[:, -1:]  # (B, 1)
    new_tokens: list[torch.Tensor] = []  # (B,) per step
    for step in range(max_new):
        logits = out.logits[:, -1].float()  # (B, vocab)
        if suppress:
            logits[:, suppress] = float("-inf")
        if eos and step < min_new:
            logits[:, eos] = float("-inf")
        if processors:
            so_far = torch.cat([input_ids, torch.stack(new_tokens, dim=1)], dim=1) if new_tokens else input_ids  # (B, L + step)
            for processor in processors:
                logits = processor(so_far, logits)
        token = logits.argmax(-1)  # (B,)
        if eos_t is not None:
            token = torch.where(unfinished, token, torch.full_like(token, pad))
            unfinished &= ~torch.isin(token, eos_t)
        new_tokens.append(token)
        if step == max_new - 1 or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        last_pos = last_pos + 1
        out = lm(input_ids=token[:, None], attention_mask=mask if padded else None, position_ids=last_pos,
                 cache=cache, use_cache=True)
    sequences = torch.cat([input_ids, torch.stack(new_tokens, dim=1)], dim=1)
    if kwargs.get("return_dict_in_generate"):
        return GenerateDecoderOnlyOutput(sequences=sequences, cache=cache)  # type: ignore[arg-type]  # LongTensor is Tensor
    return sequences
