"""Decoding constrained to the box grammar: inside an open `[`, only coordinate tokens.

A small model sometimes drifts out of a box it has started, e.g. copying the question's phrase
into it (`[0.26,0.29,0.5 purple rectangle..4]`), and the parser can then read nothing. Between a
`[` and its `]` the grammar (DESIGN §4) only ever holds digits, `.`, `,` and `;`, so a logits
processor can forbid everything else there and lose nothing the grammar allows. Outside boxes the
model is free. It works on any tokenizer: each token's text is read once, and the state of a row
(inside a box or not) is the last bracket its ids spell.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

COORDINATE_CHARS = frozenset("0123456789.,;")
NO_BRACKET, CLOSES, OPENS = -1, 0, 1


class BoxGrammarConstraint(LogitsProcessor):
    """Masks, for rows whose text has an unclosed `[`, every token that cannot continue the box.

    A token may follow an open `[` when its text up to its first `]` is made of coordinate
    characters (so `5`, `0.`, `]` and `],` may; ` purple`, `[` and special tokens may not).
    """

    def __init__(self, tokenizer, vocab_size: int | None = None) -> None:
        size = max(vocab_size or 0, len(tokenizer))
        effect = torch.full((size,), NO_BRACKET, dtype=torch.long)  # what each token does to the state
        allowed = torch.zeros(size, dtype=torch.bool)  # may follow an open `[`
        special = set(tokenizer.all_special_ids)
        for i in range(len(tokenizer)):
            if i in special:
                continue
            text = tokenizer.decode([i])
            last = max(text.rfind("["), text.rfind("]"))
            if last >= 0:
                effect[i] = OPENS if text[last] == "[" else CLOSES
            inside, bracket, _ = text.partition("]")
            allowed[i] = set(inside) <= COORDINATE_CHARS and bool(inside or bracket)
        if not allowed.any() or not bool((effect == CLOSES)[allowed].any()):
            raise ValueError("the tokenizer cannot spell a coordinate group (no digit tokens or no `]`)")
        self.effect = effect
        self.allowed = allowed

    def inside_box(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B,) True where the last bracket the ids spell is an unclosed `[`."""
        effect = self.effect.to(input_ids.device)[input_ids.clamp(0, len(self.effect) - 1)]  # (B, L)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = torch.where(effect != NO_BRACKET, positions, -1).amax(-1)  # (B,), -1 = no bracket
        state = effect.gather(1, last.clamp(min=0)[:, None]).squeeze(1)  # (B,)
        return (last >= 0) & (state == OPENS)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        inside = self.inside_box(input_ids)  # (B,)
        if not bool(inside.any()):
            return scores
        allowed = self.allowed.to(scores.device)
        if scores.shape[-1] > len(allowed):  # ids past the tokenizer (padded embeddings) never continue a box
            allowed = torch.cat([allowed, allowed.new_zeros(scores.shape[-1] - len(allowed))])
        forbidden = inside[:, None] & ~allowed[None, : scores.shape[-1]]  # (B, V)
        return scores.masked_fill(forbidden, float("-inf"))
