"""Which distributed engine a run gets from its `accelerate launch` config, and FSDP2 on the CPU.

accelerate 1.x turns an FSDP launch config into FSDP only on accelerator devices (its MULTI_GPU, MULTI_XPU,
... types); on the CPU the same config quietly trains DDP. Its FSDP2 path itself does not need a GPU:
torch's `fully_shard` over a gloo device mesh, sharded checkpoints through `torch.distributed.checkpoint`,
the full state gathered for the final save. So on the CPU a run whose config asks for FSDP2 is handed to
that path explicitly (`enable_cpu_fsdp2`), and the code that runs is the code a GPU run uses. Any other
engine the config names but accelerate did not start stops the run before its first step (`check_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs, parse_flag_from_env


class EngineUnavailableError(RuntimeError):
    """The launch config asks for an engine accelerate does not run here (it would train another way, silently)."""


_ENGINES = {"ACCELERATE_USE_FSDP": (DistributedType.FSDP, "FSDP"), "ACCELERATE_USE_DEEPSPEED": (DistributedType.DEEPSPEED, "DeepSpeed")}


def process_group() -> dict[str, Any]:
    """How this process joins its group (`PartialState(**process_group())`): gloo on the CPU.

    accelerate starts DeepSpeed only when not told `cpu=True`; without a GPU, DeepSpeed's own CPU
    accelerator then initialises the group, and it needs the backend named (gloo).
    """
    if torch.cuda.is_available():
        return {"cpu": False}
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return {"cpu": False, "backend": "gloo"}
    return {"cpu": True}


def make_accelerator(mixed_precision: str) -> Accelerator:
    """The run's Accelerator for whatever engine the launch config names, FSDP2 on the CPU included."""
    group = process_group()
    # Text-only batches leave the vision side unused: DDP must not wait for its gradients.
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if "backend" in group:
        handlers.append(InitProcessGroupKwargs(backend=group["backend"]))
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=group["cpu"], kwargs_handlers=handlers)
    enable_cpu_fsdp2(accelerator)
    check_engine(accelerator)
    return accelerator


def enable_cpu_fsdp2(accelerator: Accelerator) -> bool:
    """Give a CPU run whose launch config asks for FSDP2 accelerate's FSDP2 engine; True when it did.

    Call right after `Accelerator(...)`, before `prepare`. The plugin is read from the launch config's
    environment exactly as accelerate reads it on GPUs (`FSDP_*` variables).
    """
    if not parse_flag_from_env("ACCELERATE_USE_FSDP") or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise EngineUnavailableError(
            "the launch config asks for FSDP version 1, which needs GPUs; on the CPU set fsdp_version: 2 "
            "(train/accelerate/fsdp_8gpu.yaml does)")
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # accelerate keeps the type in two shared states; AcceleratorState() copies PartialState's on every call
    for state in (PartialState._shared_state, AcceleratorState._shared_state):
        state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    return accelerator.is_fsdp2


def check_engine(accelerator: Accelerator) -> None:
    """Refuse a run whose launch config named FSDP or DeepSpeed when accelerate chose otherwise."""
    for env, (kind, name) in _ENGINES.items():
        if parse_flag_from_env(env) and accelerator.distributed_type != kind:
            raise EngineUnavailableError(
                f"the launch config asks for {name}, but accelerate runs {accelerator.distributed_type.value} here; "
                f"on the CPU launch FSDP2 with train/accelerate/fsdp_8gpu.yaml or DDP with train/accelerate/cpu_2proc.yaml")


def configure_deepspeed(accelerator: Accelerator, micro_batch: int, max_grad_norm: float) -> None:
    """Put the loop's own facts into DeepSpeed's config before `prepare` (the TrainConfig stays their one place).

    DeepSpeed accumulates nothing itself (`micro_step` marks the boundary), clips at `max_grad_norm`
    (our loop's clipping is DeepSpeed's under DeepSpeed), and counts `micro_batch` samples per process.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = micro_batch * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm


@contextmanager
def micro_step(accelerator: Accelerator, model: torch.nn.Module, last: bool) -> Iterator[None]:
    """One micro-step of an optimizer step (its forwards and its one backward): gradients are synchronised
    only on the `last` one.

    DDP and FSDP2 skip the reduction (`no_sync`); under DeepSpeed the last backward is the accumulation
    boundary, where its engine reduces, clips and steps (its optimizer's `step` is then a no-op).
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.gradient_state._set_sync_gradients(last)  # what accelerate's own `accumulate` sets
        try:
            yield
        finally:
            accelerator.gradient_state._set_sync_gradients(True)
    elif last:
        yield
    else:
        with accelerator.no_sync(model):
            yield
