"""Weighted mixtures of datasets and length-grouped batches."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

from .samples import Sample


def mix(datasets: Mapping[str, Sequence[Sample]], weights: Mapping[str, float], num_samples: int, seed: int = 0) -> list[Sample]:
    """Draw `num_samples` samples, dataset d with probability ∝ weights[d], without replacement
    inside a dataset until it is exhausted (then it starts over, reshuffled). Deterministic."""
    names = [n for n in datasets if weights.get(n, 0) > 0 and len(datasets[n]) > 0]
    missing = set(weights) - set(datasets)
    if missing:
        raise ValueError(f"weights name unknown datasets {sorted(missing)}; known: {sorted(datasets)}")
    if not names:
        raise ValueError("every dataset in the mixture is empty or has weight 0")
    rng = random.Random(seed)
    orders: dict[str, list[int]] = {n: [] for n in names}
    out = []
    for _ in range(num_samples):
        name = rng.choices(names, [weights[n] for n in names])[0]
        if not orders[name]:
            orders[name] = list(range(len(datasets[name])))
            rng.shuffle(orders[name])
        out.append(datasets[name][orders[name].pop()])
    return out


class LengthGroupedBatches:
    """Batches of similar length: shuffle, cut into mega-batches of `group` batches, sort each by
    length, split into batches, shuffle the batches. Padding then costs little."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group: int = 16, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.lengths, self.batch_size, self.seed, self.group, self.drop_last = list(lengths), batch_size, seed, group, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}-{self.epoch}")
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        mega = self.batch_size * self.group
        batches = []
        for i in range(0, len(idx), mega):
            chunk = sorted(idx[i : i + mega], key=lambda j: self.lengths[j], reverse=True)
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of a padded batch's tokens that are padding."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    useful = sum(lengths[i] for b in batches for i in b)
    return 1 - useful / total if total else 0.0
