"""Auxiliary training losses beside the language-model loss: the attention guides (`sphinx_vi.guidance`).

The loop holds a list of `AuxiliaryLoss`es. Before a step it asks each for its targets on every
micro-batch (on the host, from ids and labels) and for their weight (`count`), summed over all
processes: the loss term is normalised by that global count, as the LM loss is by the global
token count, so N processes train like one. Around each forward it `arm`s the loss and then
`pop_loss`es the term the forward produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from ..guidance import AttentionGuide, GuideTargets, TargetReader, box_term, phrase_term
from ..modeling import SphinxViForConditionalGeneration
from .config import GuidesConfig


class AuxiliaryLoss(Protocol):
    name: str  # what its mean term is logged as
    weight: float  # its weight in the total loss

    def targets(self, batch: dict[str, Any]) -> Any: ...
    def count(self, targets: Any) -> float: ...
    def arm(self, targets: Any, position_ids: torch.Tensor | None) -> None: ...
    def pop_loss(self) -> torch.Tensor | None: ...
    def remove(self) -> None: ...


Reader = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], GuideTargets]


@dataclass
class GuideLoss:
    """An attention guide as an auxiliary loss: its targets from `read`, its term from the hooks of `guide`."""

    name: str
    weight: float
    read: Reader
    guide: AttentionGuide

    def targets(self, batch: dict[str, Any]) -> GuideTargets:
        return self.read(batch["input_ids"], batch["labels"], batch.get("position_ids"))

    def count(self, targets: GuideTargets) -> float:
        """Total weight of this micro-batch's (query, layer) terms."""
        return float(targets.query.sum()) * len(self.guide.layers)

    def arm(self, targets: GuideTargets, position_ids: torch.Tensor | None) -> None:
        self.guide.arm(targets, position_ids)

    def pop_loss(self) -> torch.Tensor | None:
        return self.guide.pop_loss()

    def remove(self) -> None:
        self.guide.remove()


def build_aux_losses(model: SphinxViForConditionalGeneration, tokenizer: PreTrainedTokenizerBase,
                     guides: GuidesConfig) -> list[AuxiliaryLoss]:
    """The guides `guides` turns on, logged as `box_attention` and `phrase_attention`."""
    reader = TargetReader(tokenizer, model.config.image_token_id, model.vision.layout)
    lm = model.language_model
    out: list[AuxiliaryLoss] = []
    box, phrase = guides.box, guides.phrase
    if box.weight > 0:
        out.append(GuideLoss("box_attention", box.weight,
                             lambda ids, labels, pos: reader.box(ids, labels, pos, box.lead_weight),
                             AttentionGuide(lm, box.layers, box.heads, box_term, "guides.box")))
    if phrase.weight > 0:
        out.append(GuideLoss("phrase_attention", phrase.weight, reader.phrase,
                             AttentionGuide(lm, phrase.layers, phrase.heads, phrase_term, "guides.phrase")))
    return out
