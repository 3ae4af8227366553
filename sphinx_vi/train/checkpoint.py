"""Training checkpoints: accelerate's full state every `save_every` steps, resume, and the final model.

A checkpoint is written to a temporary directory and renamed (atomic), so an interrupted save
never leaves a half checkpoint that a rerun would resume from. The final model is a normal
sphinx_vi checkpoint directory (`sphinx_vi.factory.save_checkpoint` + `lineage.json`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

from ..factory import save_checkpoint
from ..processing import SphinxViProcessor
from .lineage import write_lineage


def checkpoints(out: Path) -> list[Path]:
    """The run's saved states, oldest first."""
    return sorted((out / "checkpoints").glob("step-*[0-9]"))


def last_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def save_state(accelerator: Accelerator, out: Path, step: int, keep: int) -> None:
    """accelerate's full state (model, optimizer, scheduler, RNG) into a temp dir, then an atomic rename;
    only the `keep` newest checkpoints stay."""
    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = out / "checkpoints" / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resume(accelerator: Accelerator, out: Path) -> int:
    """Load the newest checkpoint of `out` into the prepared objects; the step it was saved at (0: none)."""
    last = last_checkpoint(out)
    if last is None:
        return 0
    accelerator.load_state(str(last))
    return int(json.loads((last / "state.json").read_text())["step"])


def save_final(accelerator: Accelerator, model: torch.nn.Module, unwrapped: torch.nn.Module, processor: SphinxViProcessor,
               out: Path, lineage: dict) -> Path:
    """`out/final`: the unwrapped model with the gathered state (ZeRO-3 / FSDP shards), its processor and lineage."""
    final = out / "final"
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped.eval()
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(tmp, unwrapped, processor, state_dict=state)  # type: ignore[arg-type]
        write_lineage(tmp, **lineage)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final
