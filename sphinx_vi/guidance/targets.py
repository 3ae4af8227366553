"""Where guided attention should look: pure functions of token ids, labels, the tokenizer and the visual-token layout.

For a batch of encoded samples (ids, labels, and `position_ids` for packed rows), each reader
returns `GuideTargets`: `query` (B, L), the weight of every position whose attention is guided
(0 elsewhere), and `focus` (B, L, L), the keys each such position should attend to.

- `box`: every box or point an answer writes guides the positions that predict its tokens to the
  visual tokens it covers; an answer that writes none is guided as a whole to the one box its
  question gives (REG). The positions that predict a box's *lead* (its `[` and first number, up to
  the comma: where the object is chosen) weigh `lead_weight`, the rest 1.
- `phrase`: at the same lead positions, the tokens of the phrase the box grounds — the `<p>…</p>`
  right before it in the answer, else the REC expression or detection category of the question.

Samples with no image or several are left unguided. Nothing here touches a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from ..grounding.grammar import read_numbers
from ..prompts import find_phrase
from ..text.tokens import IGNORE_INDEX
from ..vision.layout import VisualTokenLayout

_SEPARATOR = re.compile(r"[;\]]")  # ends one box or point of a coordinate group
_TAGGED_PHRASE = re.compile(r"<p>([^<>]+)</p>\s*$")  # a `<p>…</p>` phrase right before a box


class GuideTargets(NamedTuple):
    query: torch.Tensor  # (B, L) float: weight of each guided position, 0 elsewhere
    focus: torch.Tensor  # (B, L, L) bool: for each guided position, the keys it should attend to


class CoordinateGroup(NamedTuple):
    """Tokens [start, end) write one box or point; [start, lead_end) its opening and first number."""

    start: int
    end: int
    lead_end: int
    values: list[float]


def pieces_in_span(pieces: list[str], start: int, end: int) -> list[int]:
    """Indices of the token texts `pieces` whose characters overlap [start, end) of "".join(pieces)."""
    out, offset = [], 0
    for k, piece in enumerate(pieces):
        if offset < end and offset + len(piece) > start:
            out.append(k)
        offset += len(piece)
    return out


def coordinate_groups(pieces: list[str]) -> list[CoordinateGroup]:
    """The boxes and points (`[..]`, `;` between several) that the token texts `pieces` write, read
    with the grammar's own number reader; groups that are not 2 or 4 numbers in [0, 1] are skipped."""
    groups, start = [], None
    for k, piece in enumerate(pieces):
        if "[" in piece:
            start = k
        if start is not None and (";" in piece or "]" in piece):
            body = _SEPARATOR.split("".join(pieces[start : k + 1]).split("[")[-1])[0]
            values = read_numbers(body)
            if values is not None and len(values) in (2, 4) and all(0.0 <= v <= 1.0 for v in values):
                lead = next(m for m in range(start, k + 1) if "," in pieces[m] or m == k) + 1
                groups.append(CoordinateGroup(start, k + 1, lead, values))
            start = k + 1 if ";" in piece else None
    return groups


def covered_cells(token_boxes: torch.Tensor, values: list[float]) -> torch.Tensor:
    """(T_img,) bool: visual tokens overlapping box (x1, y1, x2, y2), or the one containing point (x, y)."""
    tb = token_boxes
    if len(values) == 2:  # a point on the far edge belongs to the last cell
        x, y = min(values[0], 1.0 - 1e-6), min(values[1], 1.0 - 1e-6)
        return (tb[:, 0] <= x) & (tb[:, 2] > x) & (tb[:, 1] <= y) & (tb[:, 3] > y)
    x1, y1, x2, y2 = min(values[0], values[2]), min(values[1], values[3]), max(values[0], values[2]), max(values[1], values[3])
    return (tb[:, 0] < x2) & (tb[:, 2] > x1) & (tb[:, 1] < y2) & (tb[:, 3] > y1)  # NaN rows compare False


@dataclass
class Answer:
    """One assistant answer in row `row`: tokens [begin, end) of `ids`; its question starts at `prompt_from`."""

    row: int
    start: int  # the sample's first position (packed rows hold several samples)
    prompt_from: int
    begin: int
    end: int
    ids: list[int]
    images: torch.Tensor  # (T_img,) positions of the sample's visual tokens
    groups: list[CoordinateGroup]  # the boxes and points it writes, at absolute positions


@dataclass
class TargetReader:
    """Reads guide targets for one tokenizer and layout (token texts are decoded once and kept)."""

    tokenizer: PreTrainedTokenizerBase
    image_token_id: int
    layout: VisualTokenLayout
    _texts: dict[int, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.token_boxes = self.layout.token_boxes()  # (T_img, 4), NaN off the grid

    def pieces(self, ids: list[int]) -> list[str]:
        """The text of each token id."""
        for i in ids:
            if i not in self._texts:
                self._texts[i] = str(self.tokenizer.decode([i]))
        return [self._texts[i] for i in ids]

    def answers(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None) -> Iterator[Answer]:
        """Every assistant answer of a sample with exactly one image, with the coordinate groups it writes."""
        B, L = input_ids.shape
        starts = position_ids == 0 if position_ids is not None else None
        for b in range(B):
            ids, lab = input_ids[b].tolist(), labels[b].tolist()
            segment_starts = [0] if starts is None else starts[b].nonzero().flatten().tolist() or [0]
            for s0, s1 in zip(segment_starts, segment_starts[1:] + [L]):  # one sample (a packed row holds several)
                images = torch.tensor([t for t in range(s0, s1) if ids[t] == self.image_token_id])
                if len(images) != self.layout.tokens_per_image:
                    continue  # no image, or several: not guided
                prompt_from, t = s0, s0
                while t < s1:
                    if lab[t] == IGNORE_INDEX:
                        t += 1
                        continue
                    end = t
                    while end < s1 and lab[end] != IGNORE_INDEX:
                        end += 1
                    groups = [CoordinateGroup(t + g.start, t + g.end, t + g.lead_end, g.values)
                              for g in coordinate_groups(self.pieces(ids[t:end]))]
                    yield Answer(b, s0, prompt_from, t, end, ids, images, groups)
                    prompt_from, t = end, end

    def box(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None,
            lead_weight: float = 1.0) -> GuideTargets:
        """Box targets: each box or point's predicting positions → the visual tokens it covers (REG: the question's box)."""
        if lead_weight <= 0:
            raise ValueError(f"lead_weight must be > 0, got {lead_weight}")
        B, L = input_ids.shape
        query = torch.zeros(B, L)
        focus = torch.zeros(B, L, L, dtype=torch.bool)
        for answer in self.answers(input_ids, labels, position_ids):
            b, s0, t, end = answer.row, answer.start, answer.begin, answer.end
            spans = answer.groups
            if not spans:
                question = [i for i in answer.ids[answer.prompt_from:t] if i != self.image_token_id]
                given = coordinate_groups(self.pieces(question))
                spans = [CoordinateGroup(t, end, t, given[0].values)] if len(given) == 1 and len(given[0].values) == 4 else []
            for i, j, m, values in spans:
                cells = covered_cells(self.token_boxes, values)
                if not cells.any():
                    continue  # a degenerate box on a cell edge covers no token: nothing to look at
                rows = torch.arange(max(i - 1, s0), j - 1)  # position p predicts token p + 1
                query[b, rows] = 1.0
                query[b, max(i - 1, s0) : m - 1] = lead_weight  # the rows predicting tokens [i, m)
                focus[b, rows.unsqueeze(1), answer.images[cells].unsqueeze(0)] = True
        return GuideTargets(query, focus)

    def phrase_tokens(self, answer: Answer, box_start: int) -> list[int]:
        """Positions of the tokens of the phrase the box starting at `box_start` grounds: the `<p>…</p>`
        that ends right before it in the answer, else the phrase the question asks about; [] if none."""
        pieces = self.pieces(answer.ids[answer.begin:box_start])
        text = "".join(pieces)
        if text.rfind("[") > text.rfind("]"):  # a later box of a `[..;..]` list: its phrase precedes the list
            text = text[: text.rfind("[")]
        tagged = _TAGGED_PHRASE.search(text)
        if tagged:
            return [answer.begin + k for k in pieces_in_span(pieces, *tagged.span(1))]
        pieces = self.pieces(answer.ids[answer.prompt_from:answer.begin])
        found = find_phrase("".join(pieces))
        return [answer.prompt_from + k for k in pieces_in_span(pieces, *found)] if found else []

    def phrase(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None) -> GuideTargets:
        """Phrase targets: each box or point's lead positions → the tokens of the phrase it grounds."""
        B, L = input_ids.shape
        query = torch.zeros(B, L)
        focus = torch.zeros(B, L, L, dtype=torch.bool)
        for answer in self.answers(input_ids, labels, position_ids):
            for group in answer.groups:
                phrase = self.phrase_tokens(answer, group.start)
                if not phrase:
                    continue
                rows = torch.arange(max(group.start - 1, answer.start), group.lead_end - 1)  # p predicts token p + 1
                query[answer.row, rows] = 1.0
                focus[answer.row, rows.unsqueeze(1), torch.tensor(phrase).unsqueeze(0)] = True
        return GuideTargets(query, focus)
