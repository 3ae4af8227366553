"""Box-guided attention: a training loss that tells chosen heads where the answer is in the image.

A small LLM trained from scratch finds it slow to learn *which* visual tokens a phrase refers to:
its attention starts uniform, and the gradient that would sharpen it is weak until the answer
already depends on the right tokens (reports/learning/history.md: REC stuck at the constant-box
level for every recipe without this loss). The labels already say where to look. This module adds,
for the first `heads` heads of each layer in `layers`, the loss −log(attention mass on the visual
tokens a box or point covers) at every position that predicts a token of that box or point: each
box of a REC answer, of a detection list or of a grounded caption, each keypoint, is guided to its
own region; an answer that writes no coordinates is guided as a whole to the one box its question
gives (REG). Samples with no image or several are left unguided.

The object is chosen at the first positions of a box: once its first number is written, the heads
can find the object from that number alone (reports/learning/history.md: 0.9+ of the mass on the
target even on misses). `lead_weight` weighs the positions that predict a box's or point's tokens
up to the end of its first number that much more than the rest, so that the choice is not drowned
by the many easy follow-up positions.

`PhraseAttention` guides the step before: at the same lead positions, the first heads of an early
layer (default layer 0) are trained to spread their attention over the tokens of the phrase the
box grounds (the `<p>…</p>` just before it, or the REC expression / detection category of the
question), −mean log attention over those tokens. A guided head in layer 1 can only choose the
object the phrase means if layer 0 brought the whole phrase to the answer's first position; left
alone, layer 0 reads the kind word and hardly the colour word (reports/learning/history.md).

Both are training-time hooks only: the model's forward, its saved weights and inference are the
stock ones. The attention of the guided heads is recomputed from the layer's own q/k projections
(so any attention kernel can run the forward), inside a forward pre-hook, where FSDP and ZeRO-3
have the layer's weights gathered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb

from ..data import IGNORE_INDEX
from ..grounding.grammar import read_numbers
from ..prompts import find_phrase
from ..vision.mixed import visual_token_boxes

_SEPARATOR = re.compile(r"[;\]]")  # ends one box or point of a coordinate group
_TAGGED_PHRASE = re.compile(r"<p>([^<>]+)</p>\s*$")  # a `<p>…</p>` phrase right before a box


def pieces_in_span(pieces: list[str], start: int, end: int) -> list[int]:
    """Indices of the token texts `pieces` whose characters overlap [start, end) of "".join(pieces)."""
    out, offset = [], 0
    for k, piece in enumerate(pieces):
        if offset < end and offset + len(piece) > start:
            out.append(k)
        offset += len(piece)
    return out


@dataclass
class _Answer:
    """One assistant answer of row `row`: tokens [begin, end) of `ids`; its question starts at `prompt_from`."""

    row: int
    start: int  # the sample's first position (packed rows hold several samples)
    prompt_from: int
    begin: int
    end: int
    ids: list[int]
    images: torch.Tensor  # (T_img,) positions of the sample's visual tokens
    groups: list[tuple[int, int, int, list[float]]]  # (i, j, lead end m, values) per box or point, absolute positions


class BoxAttention:
    """Hooks on the LLM's attention layers: `targets` of a batch, `use_targets` before its forward, `pop_loss` after."""

    option = "box_attention"  # the config fields' prefix, for error messages

    def __init__(self, model: nn.Module, tokenizer, image_token_id: int, layers: list[int], heads: int,
                 lead_weight: float = 1.0) -> None:
        decoder_layers = model.language_model.get_decoder().layers
        n_layers, n_heads = len(decoder_layers), model.language_model.config.num_attention_heads
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad or not layers:
            raise ValueError(f"{self.option}_layers {layers} must name layers of the {n_layers}-layer LLM")
        if not 1 <= heads <= n_heads:
            raise ValueError(f"{self.option}_heads must be in 1..{n_heads}, got {heads}")
        if lead_weight <= 0:
            raise ValueError(f"box_attention_lead_weight must be > 0, got {lead_weight}")
        self.tokenizer, self.image_token_id, self.heads, self.lead_weight = tokenizer, image_token_id, heads, lead_weight
        self.token_boxes = visual_token_boxes(model.vision.config)  # (T_img, 4), NaN off the grid
        self.layers = sorted({i % n_layers for i in layers})
        self._handles = [decoder_layers[i].self_attn.register_forward_pre_hook(self._hook, with_kwargs=True)
                         for i in self.layers]
        self._pieces: dict[int, str] = {}  # token id → its text (decoded once: targets run every step)
        self._targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._sums: list[torch.Tensor] = []

    # --- targets ----------------------------------------------------------------------------
    def _cells(self, values: list[float]) -> torch.Tensor:
        """(T_img,) bool: visual tokens overlapping box (x1, y1, x2, y2), or containing point (x, y)."""
        tb = self.token_boxes
        if len(values) == 2:  # the cell holding the point (a point on the far edge belongs to the last cell)
            x, y = min(values[0], 1.0 - 1e-6), min(values[1], 1.0 - 1e-6)
            return (tb[:, 0] <= x) & (tb[:, 2] > x) & (tb[:, 1] <= y) & (tb[:, 3] > y)
        x1, y1, x2, y2 = min(values[0], values[2]), min(values[1], values[3]), max(values[0], values[2]), max(values[1], values[3])
        return (tb[:, 0] < x2) & (tb[:, 2] > x1) & (tb[:, 1] < y2) & (tb[:, 3] > y1)  # NaN rows compare False

    def _piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id])
        return self._pieces[token_id]

    def coordinate_groups(self, ids: list[int]) -> list[tuple[int, int, int, list[float]]]:
        """Token spans [i, j) of `ids` that write one box or point (`[..]`, `;` between several), each with
        the end m of its lead (tokens [i, m) write the opening and the first number, up to its comma) and its values."""
        pieces = [self._piece(i) for i in ids]
        groups, start = [], None
        for k, piece in enumerate(pieces):
            if "[" in piece:
                start = k
            if start is not None and (";" in piece or "]" in piece):
                body = _SEPARATOR.split("".join(pieces[start : k + 1]).split("[")[-1])[0]
                values = read_numbers(body)  # the grammar's own reader
                if values is not None and len(values) in (2, 4) and all(0.0 <= v <= 1.0 for v in values):
                    lead = next(m for m in range(start, k + 1) if "," in pieces[m] or m == k) + 1
                    groups.append((start, k + 1, lead, values))
                start = k + 1 if ";" in piece else None
        return groups

    def targets(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None):
        """(B, L) ids and labels → query (B, L) float: the weight of each position that predicts a guided
        answer token (0 elsewhere; `lead_weight` where it predicts a box's lead, 1 after it);
        focus (B, L, L) bool: for each such query, the visual tokens it should look at.

        Every box or point an answer writes guides the positions that predict its tokens to the
        tokens it covers; an answer that writes none is guided as a whole by the question's box if
        the question gives exactly one (REG)."""
        B, L = input_ids.shape
        query = torch.zeros(B, L)
        focus = torch.zeros(B, L, L, dtype=torch.bool)
        for answer in self._answers(input_ids, labels, position_ids):
            b, s0, t, end = answer.row, answer.start, answer.begin, answer.end
            spans = answer.groups
            if not spans:
                question = [i for i in answer.ids[answer.prompt_from:t] if i != self.image_token_id]
                given = self.coordinate_groups(question)
                spans = [(t, end, t, given[0][3])] if len(given) == 1 and len(given[0][3]) == 4 else []
            for i, j, m, values in spans:
                cells = self._cells(values)
                if not cells.any():
                    continue  # a degenerate box on a cell edge covers no token: nothing to look at
                rows = torch.arange(max(i - 1, s0), j - 1)  # position p predicts token p + 1
                query[b, rows] = 1.0
                query[b, max(i - 1, s0) : m - 1] = self.lead_weight  # the rows predicting tokens [i, m)
                focus[b, rows.unsqueeze(1), answer.images[cells].unsqueeze(0)] = True
        return query, focus

    def _answers(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None) -> Iterator[_Answer]:
        """Every assistant answer of a sample with exactly one image, with the coordinate groups it writes."""
        B, L = input_ids.shape
        starts = position_ids == 0 if position_ids is not None else None
        for b in range(B):
            ids, lab = input_ids[b].tolist(), labels[b].tolist()
            segment_starts = [0] if starts is None else starts[b].nonzero().flatten().tolist() or [0]
            for s0, s1 in zip(segment_starts, segment_starts[1:] + [L]):  # one sample (a packed row holds several)
                images = torch.tensor([t for t in range(s0, s1) if ids[t] == self.image_token_id])
                if len(images) != len(self.token_boxes):
                    continue  # no image, or several: not guided
                prompt_from, t = s0, s0
                while t < s1:
                    if lab[t] == IGNORE_INDEX:
                        t += 1
                        continue
                    end = t
                    while end < s1 and lab[end] != IGNORE_INDEX:
                        end += 1
                    groups = [(t + i, t + j, t + m, v) for i, j, m, v in self.coordinate_groups(ids[t:end])]
                    yield _Answer(b, s0, prompt_from, t, end, ids, images, groups)
                    prompt_from, t = end, end

    def use_targets(self, query: torch.Tensor, focus: torch.Tensor, position_ids: torch.Tensor | None = None) -> None:
        """Arm the hooks with one micro-batch's `targets` for the next forward."""
        device = focus.device if position_ids is None else position_ids.device
        segments = None if position_ids is None else (position_ids == 0).long().cumsum(-1)
        self._targets = (query.to(device), focus.to(device), segments)
        self._sums = []

    # --- the loss -----------------------------------------------------------------------------
    def _hook(self, attn: nn.Module, args, kwargs) -> None:
        if self._targets is None or not torch.is_grad_enabled():
            return
        query, focus, segments = self._targets
        if not query.any():
            return
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, L, D), after the input norm
        cos, sin = kwargs["position_embeddings"]
        B, L, _ = hidden.shape
        hd, H = attn.head_dim, self.heads
        q = attn.q_proj(hidden).view(B, L, -1, hd)[:, :, :H].transpose(1, 2)  # (B, H, L, hd)
        k = attn.k_proj(hidden).view(B, L, -1, hd).transpose(1, 2)  # (B, H_kv, L, hd)
        groups = attn.config.num_attention_heads // attn.config.num_key_value_heads
        k = k[:, [h // groups for h in range(H)]]  # (B, H, L, hd): the kv head each guided head reads
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        b_idx, q_idx = query.nonzero(as_tuple=True)  # (Q,), (Q,) guided positions, in row-major order
        scores = torch.cat([  # (Q, H, L): per row, its query positions against all its keys (no per-query key copies)
            (q[b][:, q_idx[b_idx == b]] @ k[b].transpose(-1, -2)).transpose(0, 1) for b in b_idx.unique().tolist()
        ]) * attn.scaling
        keys = torch.arange(L, device=hidden.device)
        visible = keys.unsqueeze(0) <= q_idx.unsqueeze(1)  # (Q, L) causal
        if segments is not None:
            visible &= segments[b_idx] == segments[b_idx, q_idx].unsqueeze(1)  # packed rows: own sample only
        log_p = scores.float().masked_fill(~visible.unsqueeze(1), float("-inf")).log_softmax(-1)  # (Q, H, L)
        weight = query[b_idx, q_idx].to(log_p.dtype)  # (Q,)
        self._sums.append((self.term(log_p, focus[b_idx, q_idx]).mean(-1) * weight).sum())  # Σ_queries weight · term, head mean

    @staticmethod
    def term(log_p: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """(Q, H, L) log attention, (Q, L) focus → (Q, H): −log of the attention mass on the focus."""
        return -log_p.masked_fill(~focus.unsqueeze(1), float("-inf")).logsumexp(-1)

    def pop_loss(self) -> torch.Tensor | None:
        """Σ over this forward's (query, layer) terms of weight · −log(attention mass on the box); None if there were none."""
        sums, self._sums, self._targets = self._sums, [], None
        return torch.stack(sums).sum() if sums else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class PhraseAttention(BoxAttention):
    """At the positions that choose a box (its lead), the first `heads` heads of `layers` are trained to
    read the phrase the box grounds: −mean log attention over the phrase's tokens (its minimum spreads
    the head evenly over the whole phrase, colour word as well as kind word)."""

    option = "phrase_attention"

    def __init__(self, model: nn.Module, tokenizer, image_token_id: int, layers: list[int], heads: int) -> None:
        super().__init__(model, tokenizer, image_token_id, layers, heads)

    def phrase_tokens(self, answer: _Answer, box_start: int) -> list[int]:
        """Positions of the tokens of the phrase the box starting at `box_start` grounds: the `<p>…</p>`
        that ends right before it in the answer, else the phrase the question asks about; [] if none."""
        pieces = [self._piece(i) for i in answer.ids[answer.begin:box_start]]
        text = "".join(pieces)
        if text.rfind("[") > text.rfind("]"):  # a later box of a `[..;..]` list: its phrase precedes the list
            text = text[: text.rfind("[")]
        tagged = _TAGGED_PHRASE.search(text)
        if tagged:
            return [answer.begin + k for k in pieces_in_span(pieces, *tagged.span(1))]
        pieces = [self._piece(i) for i in answer.ids[answer.prompt_from:answer.begin]]
        found = find_phrase("".join(pieces))
        return [answer.prompt_from + k for k in pieces_in_span(pieces, *found)] if found else []

    def targets(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None):
        """(B, L) ids and labels → query (B, L) float: 1 at each position that predicts a box's or point's lead
        (0 elsewhere); focus (B, L, L) bool: the tokens of the phrase that box grounds."""
        B, L = input_ids.shape
        query = torch.zeros(B, L)
        focus = torch.zeros(B, L, L, dtype=torch.bool)
        for answer in self._answers(input_ids, labels, position_ids):
            for i, _, m, _ in answer.groups:
                phrase = self.phrase_tokens(answer, i)
                if not phrase:
                    continue
                rows = torch.arange(max(i - 1, answer.start), m - 1)  # position p predicts token p + 1
                query[answer.row, rows] = 1.0
                focus[answer.row, rows.unsqueeze(1), torch.tensor(phrase).unsqueeze(0)] = True
        return query, focus

    @staticmethod
    def term(log_p: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """(Q, H, L) log attention, (Q, L) focus → (Q, H): −mean log attention over the focus tokens."""
        on = focus.unsqueeze(1).to(log_p.dtype)  # (Q, 1, L)
        return -(log_p.masked_fill(~focus.unsqueeze(1), 0.0) * on).sum(-1) / on.sum(-1).clamp(min=1)
