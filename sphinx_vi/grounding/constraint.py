"""Decoding constrained to the box grammar: inside an open `[`, only a well-formed coordinate group.

A small model sometimes drifts out of a box it has started, e.g. copying the question's phrase
into it (`[0.26,0.29,0.5 purple rectangle..4]`), or writes coordinate characters in an order the
parser cannot read (`[0.47,0.2,,0.09,0.55]`). Between a `[` and its `]` the grammar
only ever holds groups of 2 (a point) or 4 (a box) numbers in [0, 1], separated by `,`, groups
separated by `;`. A small character automaton follows that grammar, so a logits processor can
forbid every token that would break it and lose nothing the grammar allows. Outside boxes the model
is free.

It works on any tokenizer: each token's text is read once, and the automaton's move for each
(state, token) pair is tabulated (only tokens made of coordinate characters or holding a bracket
need more than a default). A row's state moves by one token per decoding step; when the ids do not
extend the previous call's (a new prompt, reordered beams), it is read afresh from them: the last
bracket they spell, then the tokens after it.
"""

from __future__ import annotations

from collections import deque

import torch
from transformers import LogitsProcessor

COORDINATE_CHARS = frozenset("0123456789.,;")
GROUP_SIZES = (2, 4)  # a point, a box
OUTSIDE, OTHER_BRACKET = 0, 1  # not in a bracket; in a bracket that is not a box (`[INST]`)

# An inside state is (numbers done in this group, lead digit of the current number or None,
# decimals read: -1 before the dot, 0 right after it). A number is `0`, `1`, `0.d…` or `1.0…`.
_Inside = tuple[int, str | None, int]
_START: _Inside = (0, None, -1)


def _complete(state: _Inside) -> bool:
    """The current number can end here (it has a lead digit and is not a bare `0.`)."""
    return state[1] is not None and state[2] != 0


def _step_inside(state: _Inside, ch: str, max_decimals: int) -> _Inside | None:
    """One character inside a box → the next state, or None where the grammar forbids it."""
    done, lead, decimals = state
    if ch.isdigit():
        if lead is None:
            return (done, ch, -1) if ch in "01" else None
        if decimals < 0 or decimals >= max_decimals or (lead == "1" and ch != "0"):
            return None
        return (done, lead, decimals + 1)
    if ch == ".":
        return (done, lead, 0) if lead is not None and decimals < 0 else None
    if ch == "," and _complete(state) and done + 1 < max(GROUP_SIZES):
        return (done + 1, None, -1)
    if ch == ";" and _complete(state) and done + 1 in GROUP_SIZES:
        return _START
    return None


def _closes(state: _Inside) -> bool:
    return _complete(state) and state[0] + 1 in GROUP_SIZES


class BoxGrammarConstraint(LogitsProcessor):
    """Masks, for rows inside an open `[`, every token that cannot continue a well-formed group.

    `allowed[s, t]`: token t may follow a row in state s. States 0 (outside) and 1 (another
    bracket) allow everything; the rest are inside a box. After a token's `]` nothing is checked.
    """

    def __init__(self, tokenizer, vocab_size: int | None = None, max_decimals: int = 4) -> None:
        self.max_decimals = max_decimals
        inside = self._inside_states()
        self.index = {s: i + 2 for i, s in enumerate(inside)}  # inside state → id
        self.names = {i: s for s, i in self.index.items()}
        n_states, size = len(inside) + 2, max(vocab_size or 0, len(tokenizer))
        self.start = self.index[_START]
        # Defaults, right for any token without brackets that is not made of coordinate characters:
        # outside and in other brackets it changes nothing; inside a box it is forbidden.
        moves = torch.full((n_states, size), OTHER_BRACKET, dtype=torch.long)  # lenient: what the text is in
        moves[OUTSIDE] = OUTSIDE
        allowed = torch.zeros(n_states, size, dtype=torch.bool)
        allowed[[OUTSIDE, OTHER_BRACKET]] = True
        has_bracket = torch.zeros(size, dtype=torch.bool)
        after_bracket = torch.full((size,), OUTSIDE, dtype=torch.long)  # state after a token's last bracket
        special = set(tokenizer.all_special_ids)
        for t in range(len(tokenizer)):
            text = "" if t in special else tokenizer.decode([t])
            brackets = "[" in text or "]" in text
            if not brackets and not (text and set(text) <= COORDINATE_CHARS):
                continue
            has_bracket[t] = brackets
            for s in range(n_states):
                moves[s, t], allowed[s, t] = self._read(s, text)
            if brackets:
                after_bracket[t] = moves[OUTSIDE, t]  # a bracket resets the state: any start gives the same
        self.moves, self.allowed, self.has_bracket, self.after_bracket = moves, allowed, has_bracket, after_bracket
        self._check_every_box_can_close(n_states)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (ids, states) of the previous call
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(moves, allowed, has_bracket, after_bracket) on `device`, copied there once."""
        if device not in self._tables:
            self._tables[device] = (self.moves.to(device), self.allowed.to(device), self.has_bracket.to(device), self.after_bracket.to(device))
        return self._tables[device]

    def _inside_states(self) -> list[_Inside]:
        """Every inside state reachable from a fresh `[`, in a fixed order."""
        seen, queue = [_START], deque([_START])
        while queue:
            state = queue.popleft()
            for ch in sorted(COORDINATE_CHARS):
                nxt = _step_inside(state, ch, self.max_decimals)
                if nxt is not None and nxt not in seen:
                    seen.append(nxt)
                    queue.append(nxt)
        return seen

    def _read(self, state: int, text: str) -> tuple[int, bool]:
        """Feed `text` from `state` → (the state the text is then in, whether the grammar allows it).

        The state is lenient (a `[` always opens, a `]` always closes, anything unreadable inside a
        box means another kind of bracket), so prompts and unconstrained text can be read too."""
        ok, checking = True, True
        for ch in text:
            inside = self.names.get(state)
            if ch == "[":
                ok &= not (checking and inside is not None)
                state = self.start
            elif ch == "]":
                ok &= not (checking and inside is not None and not _closes(inside))
                state, checking = OUTSIDE, False  # after the box the model is free
            elif inside is not None:
                nxt = _step_inside(inside, ch, self.max_decimals)
                ok &= not (checking and nxt is None)
                state = OTHER_BRACKET if nxt is None else self.index[nxt]
        return state, ok

    def _check_every_box_can_close(self, n_states: int) -> None:
        """Refuse a tokenizer with which some box, once opened, could never be closed."""
        follows = {s: set(self.moves[s][self.allowed[s]].tolist()) for s in range(2, n_states)}
        can_close = {OUTSIDE}
        while True:
            more = {s for s, nxt in follows.items() if s not in can_close and nxt & can_close}
            if not more:
                break
            can_close |= more
        reachable, queue = {self.start}, deque([self.start])
        while queue:
            for n in follows[queue.popleft()]:
                if n >= 2 and n not in reachable:
                    reachable.add(n)
                    queue.append(n)
        if not reachable <= can_close:
            raise ValueError("the tokenizer cannot spell a coordinate group (no digit tokens or no `]`)")

    def state(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B,) the automaton's state after them (0 outside, 1 other bracket, ≥ 2 in a box)."""
        moves, _, has_bracket, after_bracket = self._on(input_ids.device)
        ids = input_ids.clamp(0, moves.shape[1] - 1)
        positions = torch.arange(ids.shape[1], device=ids.device)
        last = torch.where(has_bracket[ids], positions, -1).amax(-1)  # (B,), -1 = no bracket
        state = torch.where(last >= 0, after_bracket[ids.gather(1, last.clamp(min=0)[:, None]).squeeze(1)], OUTSIDE)  # (B,)
        boxed = state >= 2
        if not bool(boxed.any()):
            return state
        for j in range(int(last[boxed].min()) + 1, ids.shape[1]):  # only the tokens inside the open boxes
            step = boxed & (positions[j] > last)
            state = torch.where(step, moves[state, ids[:, j]], state)
        return state

    def inside_box(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B,) True where the ids end inside an open box."""
        return self.state(input_ids) >= 2

    def _state_now(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`state(input_ids)`, in one step from the previous call when these ids extend its ids by one
        token (greedy and sampling loops); read afresh otherwise (a new prompt, reordered beams).
        The check and the swap touch one attribute, so concurrent generations only lose the shortcut."""
        last = self._last
        if (last is not None and input_ids.shape[1] == last[0].shape[1] + 1 and input_ids.shape[0] == last[0].shape[0]
                and torch.equal(input_ids[:, :-1], last[0])):
            moves = self._on(input_ids.device)[0]
            state = moves[last[1], input_ids[:, -1].clamp(0, moves.shape[1] - 1)]  # (B,)
        else:
            state = self.state(input_ids)
        self._last = (input_ids.clone(), state)
        return state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        state = self._state_now(input_ids)  # (B,)
        inside = state >= 2
        if not bool(inside.any()):
            return scores
        allowed = self._on(scores.device)[1][state]  # (B, V_tok)
        vocab = scores.shape[-1]
        if vocab > allowed.shape[1]:  # ids past the tokenizer (padded embeddings) never continue a box
            allowed = torch.cat([allowed, inside[:, None].logical_not().expand(-1, vocab - allowed.shape[1])], dim=1)
        return scores.masked_fill(~allowed[:, :vocab], float("-inf"))  # type: ignore[return-value]  # FloatTensor is Tensor
