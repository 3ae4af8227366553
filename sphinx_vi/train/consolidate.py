"""A sharded training checkpoint (FSDP2 or DeepSpeed ZeRO) → a normal checkpoint directory.

`python -m sphinx_vi.train consolidate RUN/checkpoints/step-0000200 --out DIR` merges the shards with the
engine's own tool — accelerate's `merge_fsdp_weights` for FSDP2's `torch.distributed.checkpoint` shards,
DeepSpeed's `zero_to_fp32` for ZeRO partitions (no process group needed, CPU only) — loads them strictly into the model
the run started from (its `config.yaml`: preset or `--init`, LoRA wrapping included), folds LoRA in, and
writes what `SphinxVi.from_pretrained` reads, with a lineage naming the step it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from accelerate.utils import merge_fsdp_weights
from safetensors.torch import load_file

from ..factory import save_checkpoint
from ..weights import check_complete
from .config import load_config
from .lineage import write_lineage
from .parts import apply_trainable, merge_lora
from .recipes import load_start

FSDP_MODEL_DIR = "pytorch_model_fsdp_0"  # accelerate's name for the first prepared model's shards
DEEPSPEED_TAG_FILE = "latest"  # DeepSpeed's pointer to the tag directory (accelerate's tag: pytorch_model)


class NotAShardedCheckpointError(FileNotFoundError):
    """The directory is not a training checkpoint with sharded model weights."""


def merged_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of a sharded checkpoint, by the engine that wrote it."""
    if (step_dir / FSDP_MODEL_DIR / ".metadata").exists():
        with tempfile.TemporaryDirectory() as tmp:
            merge_fsdp_weights(str(step_dir / FSDP_MODEL_DIR), tmp, safe_serialization=True)
            return load_file(str(Path(tmp) / "model.safetensors"))
    if (step_dir / DEEPSPEED_TAG_FILE).exists():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(step_dir)))
    saved = sorted(p.name for p in step_dir.iterdir()) if step_dir.is_dir() else []
    raise NotAShardedCheckpointError(
        f"{step_dir}: no sharded model (FSDP2 {FSDP_MODEL_DIR}/.metadata or DeepSpeed {DEEPSPEED_TAG_FILE}); "
        f"found {saved or 'nothing'}. Checkpoints of DDP / one-process runs hold full weights already: the run's final/ is the model")


def consolidate(step_dir: str | Path, out: str | Path) -> Path:
    step_dir = Path(step_dir)
    state = merged_weights(step_dir)
    run = step_dir.parent.parent
    cfg = load_config(run / "config.yaml")
    (model, processor), lineage = load_start(cfg)
    apply_trainable(model, cfg)  # the same module tree the shards were saved from (LoRA wrappers too)
    with torch.no_grad():
        info = model.load_state_dict(state, strict=False)
    check_complete(f"sharded checkpoint {step_dir}", info.missing_keys, info.unexpected_keys)
    model = merge_lora(model)
    step = json.loads((step_dir / "state.json").read_text())["step"]
    out = Path(out)
    tmp_out = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    save_checkpoint(tmp_out, model.eval(), processor)
    extra = {"captions": cfg.captions} if cfg.stage == "stage1" else {}  # as the stage's own final save records
    write_lineage(tmp_out, **lineage, **extra, stage=cfg.stage, steps=step, data=cfg.data, consolidated_from=str(step_dir))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp_out, out)
    return out
