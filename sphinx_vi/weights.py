"""Reading checkpoint files exactly: every shard format we meet, and a loud error for any weight left unloaded.

Formats: safetensors (single file or sharded with `model.safetensors.index.json`), PyTorch pickles
(`pytorch_model.bin`, sharded with `pytorch_model.bin.index.json`, LLaMA2-Accessory's
`consolidated.NN-of-MM.model.pth`, optionally wrapped as {"model": ...}). Pickles are read with
`weights_only=True`: a checkpoint cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open


class IncompleteWeightsError(ValueError):
    """A model part whose weights did not all load: it would run half random."""


class WeightFilesError(FileNotFoundError):
    """A checkpoint directory without weight files, or with a shard its index names but the disk lacks."""


# Non-persistent buffers that transformers rebuilds itself; never a missing weight.
REBUILT = ("position_ids",)


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, in shard order (safetensors preferred)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [n for n in names if not (directory / n).exists()]
            if missing:
                raise WeightFilesError(f"{index}: shard(s) {', '.join(missing)} named in the index are not in {directory}")
            return [directory / n for n in names]
    for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt"):
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise WeightFilesError(f"{directory}: no weight files (*.safetensors, *.bin, *.pth)")


def read_tensors(files: Iterable[Path], keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """(key, tensor, file) for every tensor of `files` whose key `keep` accepts (all by default)."""
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has keys() but is not iterable
                    if keep is None or keep(key):
                        yield key, f.get_tensor(key), file
            continue
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(state, dict) and set(state) == {"model"} and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise WeightFilesError(f"{file}: not a state dict (a {type(state).__name__})")
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and (keep is None or keep(key)):
                yield key, value, file


def check_complete(what: str, missing: Iterable[str], unexpected: Iterable[str] = (), mismatched: Iterable = ()) -> None:
    """Raise `IncompleteWeightsError` naming the first keys when anything is missing, unexpected or of the wrong shape."""
    missing = sorted(k for k in missing if not k.endswith(REBUILT))
    unexpected, mismatched = sorted(unexpected), list(mismatched)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape (e.g. {mismatched[0]})")
        raise IncompleteWeightsError(f"{what}: weights do not match the architecture: {'; '.join(parts)}; "
                                     "nothing is left at random init")


def fetch(ref: str, patterns: list[str]) -> Path:
    """A hub repository's files matching `patterns`, downloaded once (callers check that downloads are allowed)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ref, allow_patterns=patterns))
