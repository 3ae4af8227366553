"""Weight-average two stage-1 models: θ = β·θ_real + (1−β)·θ_synthetic (SPHINX's LLM mixing).

Every tensor is averaged with the same β — the LLM (exactly β·A + (1−β)·B) and the other trained
parts (projector, begin/end, position map, trainable towers); parts both runs kept frozen are
identical and so stay as they are. Checkpoints that did not start from the same base are refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..factory import load_checkpoint, save_checkpoint
from .lineage import read_lineage, write_lineage


class LineageMismatchError(ValueError):
    """The two checkpoints did not start from the same base weights: averaging them is meaningless."""


def merge(real: str | Path, synthetic: str | Path, beta: float, out: str | Path) -> Path:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    la, lb = read_lineage(Path(real)), read_lineage(Path(synthetic))
    for path, lin in ((real, la), (synthetic, lb)):
        if not lin.get("base"):
            raise LineageMismatchError(f"{path}: no lineage.json with a base fingerprint (not a stage-1 output)")
    if la["base"] != lb["base"]:
        raise LineageMismatchError(
            f"{real} and {synthetic} started from different base weights ({la['base'][:12]} vs {lb['base'][:12]}); "
            "run both stage-1 jobs from the same preset and init_seed (or the same --init)"
        )
    (model, processor), (other, _) = load_checkpoint(real), load_checkpoint(synthetic)
    sa, sb = model.state_dict(), other.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise LineageMismatchError(f"{real} and {synthetic} have different architectures")
    merged = {}
    for k in sa:
        if sa[k].is_floating_point():
            merged[k] = beta * sa[k] + (1.0 - beta) * sb[k]
        else:
            merged[k] = sa[k]
    with torch.no_grad():
        model.load_state_dict(merged)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model, processor)
    write_lineage(tmp, base=la["base"], stage="merge", beta=beta, parents=[str(real), str(synthetic)])
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
