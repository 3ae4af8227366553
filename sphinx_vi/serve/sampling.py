"""A request's generation parameters, checked before they reach `generate` in the model's process.

transformers' handler maps the OpenAI fields (`max_tokens`, `temperature`, `top_p`, `seed`, `frequency_penalty`,
`logit_bias`) and passes a request's `generation_config` (a JSON object of `generate` settings) through as it is.
Read unchecked, a wrong type or range fails inside `generate` (a 500 from the model's process) and
`num_beams: 10000` asks for ten thousand caches. Here every one of them is checked against the settings a served
grounding model accepts, and a request outside them gets a 400 naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class SamplingError(ValueError):
    """A generation parameter of a request that the server does not accept (answered with a 400)."""


@dataclass(frozen=True)
class Bound:
    """The type and closed range a parameter must have (`low_open`: the low end itself is excluded)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, name: str, value: Any) -> None:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise SamplingError(f"{name}: expected true or false, got {value!r}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and not isinstance(value, int)):
            raise SamplingError(f"{name}: expected {'an integer' if self.kind is int else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise SamplingError(f"{name}: expected a finite number, got {value!r}")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or (self.high is not None and value > self.high):
            low = "" if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
            high = "" if self.high is None else f"≤ {self.high:g}"
            raise SamplingError(f"{name}: {value!r} is out of range (expected {' and '.join(p for p in (low, high) if p)})")


def generation_config_bounds(max_beams: int) -> dict[str, Bound]:
    """The `generate` settings a request's `generation_config` may set, with their ranges (beams up to `max_beams`)."""
    return {
        "num_beams": Bound(int, 1, max_beams),
        "do_sample": Bound(bool),
        "early_stopping": Bound(bool),
        "temperature": Bound(float, 0, 100),
        "top_k": Bound(int, 0),
        "top_p": Bound(float, 0, 1, low_open=True),
        "min_p": Bound(float, 0, 1),
        "typical_p": Bound(float, 0, 1, low_open=True),
        "repetition_penalty": Bound(float, 0, 100, low_open=True),
        "length_penalty": Bound(float, -100, 100),
        "no_repeat_ngram_size": Bound(int, 0),
        "max_new_tokens": Bound(int, 1),
        "min_new_tokens": Bound(int, 0),
    }


# The OpenAI fields transformers maps onto `generate`, with OpenAI's own ranges; `seed` must fit torch's generator.
REQUEST_BOUNDS = {
    "max_tokens": Bound(int, 1),
    "max_completion_tokens": Bound(int, 1),
    "temperature": Bound(float, 0, 2),
    "top_p": Bound(float, 0, 1, low_open=True),
    "frequency_penalty": Bound(float, -1, 2, low_open=True),  # becomes repetition_penalty = 1 + it, which must be > 0
    "seed": Bound(int, 0, 2**63 - 1),
}
LOGIT_BIAS = Bound(float, -100, 100)


def check_generation_params(body: dict[str, Any], vocab_size: int, max_beams: int) -> None:
    """Raise `SamplingError` naming the first generation parameter of `body` the server does not accept."""
    for name, bound in REQUEST_BOUNDS.items():
        if body.get(name) is not None:
            bound.check(name, body[name])
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise SamplingError("logit_bias: expected an object of token id → bias")
        for token, value in bias.items():
            if not (isinstance(token, str) and token.isdigit() and int(token) < vocab_size):
                raise SamplingError(f"logit_bias: {token!r} is not a token id of this model (0 … {vocab_size - 1})")
            LOGIT_BIAS.check(f"logit_bias[{token}]", value)
    raw = body.get("generation_config")
    if raw is None:
        return
    try:
        requested = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as err:
        raise SamplingError(f"generation_config: not valid JSON ({err.msg})") from None
    if not isinstance(requested, dict):
        raise SamplingError("generation_config: expected a JSON object (as a string) of generate settings")
    bounds = generation_config_bounds(max_beams)
    for name, value in requested.items():
        if name not in bounds:
            raise SamplingError(f"generation_config: {name!r} cannot be set by a request; accepted: {', '.join(bounds)}")
        bounds[name].check(f"generation_config.{name}", value)
    if body.get("stream") and requested.get("num_beams", 1) > 1:
        raise SamplingError("generation_config.num_beams: beam search cannot stream (its best answer is known only at the "
                            "end); send it without stream")
