"""The one training loop behind both stages, on accelerate (CPU, DDP, FSDP2, DeepSpeed from the same code).

Data order is a pure function of (seed, step): every process computes the same global batch and
takes its slice, so a resumed run sees exactly the batches an uninterrupted one would, and N
processes see exactly what one process sees at the same global batch. The loss is a sum over
label tokens divided by the global token count, so gradients match across world sizes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import EncodedDataset, LengthGroupedBatches, collate, collate_packed
from ..modeling import SphinxViForConditionalGeneration
from ..packed_attention import use_packed_attention
from ..processing import SphinxViProcessor
from ..text.tokens import IGNORE_INDEX
from . import checkpoint
from .aux_losses import AuxiliaryLoss, build_aux_losses
from .config import TrainConfig, save_config
from .engines import configure_deepspeed, make_accelerator, micro_step
from .metrics import MetricsLog, plot_losses
from .parts import apply_trainable, merge_lora
from .schedule import lr_factor, scaled_lr


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the broken weights."""


@dataclass
class Stream:
    """A source of batches with its own batch size and loss weight (stage 1 has two)."""

    name: str
    dataset: EncodedDataset
    lengths: list[int]
    batch_size: int  # per process
    weight: float = 1.0


class _GlobalBatches:
    """Infinite, resumable sequence of this process's slices of length-grouped global batches."""

    def __init__(self, lengths: list[int], global_batch: int, rank: int, world: int, seed: int, start: int) -> None:
        self.sampler = LengthGroupedBatches(lengths, global_batch, seed=seed, drop_last=len(lengths) >= global_batch)
        self.rank, self.world, self.start = rank, world, start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = len(self.sampler)
        k = self.start
        epoch, cached = -1, []
        while True:
            if k // per_epoch != epoch:
                epoch = k // per_epoch
                self.sampler.set_epoch(epoch)
                cached = list(self.sampler)
            yield cached[k % per_epoch][self.rank :: self.world]
            k += 1


def resolve_precision(precision: str) -> str:
    """The config's precision → accelerate's `mixed_precision`: bf16 is autocast over fp32 master weights.

    `auto`: bf16 on a GPU that supports it; fp32 on the CPU, where bf16 autocast pays only at real widths
    (measured here: 0.8× at hidden 64, 1.7× at 256, 2.2× at 1024; README, Performance), so there it is
    asked for by name. bf16 tracks fp32's losses within 5 % over 200 steps (tests/test_precision.py).
    """
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("precision fp16 needs a GPU (fp16 autocast on the CPU is not supported); use bf16 or fp32")
    return "no" if precision == "fp32" else precision


@dataclass
class Run:
    """What a run holds between its steps (built by `setup`)."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: Any  # the prepared (possibly wrapped) model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    streams: list[Stream]
    loaders: dict[str, Iterator[Any]]  # stream name → its batches (dicts from `collate`)
    aux: list[AuxiliaryLoss]
    log: MetricsLog
    start: int  # the step it starts (or resumes) at
    restore_attention: str | None  # the attention kernel the saved model gets back (packing swaps it)
    t0: float = field(default_factory=time.perf_counter)
    seen: int = 0  # samples this process trained on
    dropped: int = 0  # samples whose image failed to load

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def global_sum(self, value: float | int) -> float:
        """`value` summed over every process."""
        return float(self.accelerator.reduce(torch.tensor(value, device=self.accelerator.device), "sum"))


@dataclass
class StepResult:
    losses: dict[str, float]  # per stream: mean loss per label token (global)
    aux: dict[str, float]  # per auxiliary loss with terms this step: mean term (global)
    grad_norm: float | None


def setup(cfg: TrainConfig, model: SphinxViForConditionalGeneration, processor: SphinxViProcessor,
          streams: list[Stream]) -> Run:
    """Accelerator, trainable parts, auxiliary losses, optimizer and schedule, resume, data loaders."""
    accelerator = make_accelerator(resolve_precision(cfg.precision))
    rank, world = accelerator.process_index, accelerator.num_processes
    out = Path(cfg.out)
    set_seed(cfg.seed + rank)  # dropout / sampling only; data order and init do not depend on it

    peak_lr, global_batch = scaled_lr(cfg, world)
    restore = use_packed_attention(model.language_model) if cfg.packing else None  # Σ len² attention for packed rows
    counts = apply_trainable(model, cfg)
    aux = build_aux_losses(model, processor.tokenizer, cfg.guides)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        print(f"[{cfg.stage}] learning rate {cfg.lr:g} × global batch {global_batch} / reference {cfg.reference_batch} = {peak_lr:g}")
        print(f"[{cfg.stage}] {world} process(es), {accelerator.distributed_type.value}, precision {resolve_precision(cfg.precision)}; trainable: "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(cfg.betas[0], cfg.betas[1]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=cfg))
    # The scheduler is not `prepare`d: accelerate would step it once per process per step, and our
    # data order does not depend on the world size. It is still saved with every checkpoint.
    configure_deepspeed(accelerator, max(s.batch_size for s in streams), cfg.max_grad_norm)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    log = MetricsLog(out / "metrics.jsonl", enabled=accelerator.is_main_process)
    start = checkpoint.resume(accelerator, out) if cfg.resume else 0
    if start:
        log.truncate_after(start)
        if accelerator.is_main_process:
            print(f"[{cfg.stage}] resumed from {checkpoint.last_checkpoint(out)} at step {start}")

    pad = processor.tokenizer.pad_token_id
    collate_fn = partial(collate_packed, capacity=cfg.max_length) if cfg.packing else collate
    loaders: dict[str, Iterator[Any]] = {}
    for s in streams:
        batches = _GlobalBatches(s.lengths, s.batch_size * world, rank, world, cfg.seed, start * cfg.grad_accum)
        loaders[s.name] = iter(DataLoader(s.dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                                          collate_fn=partial(collate_fn, pad_token_id=pad)))
    return Run(cfg, accelerator, prepared, optimizer, scheduler, streams, loaders, aux, log, start, restore)


def train_step(run: Run, step: int) -> StepResult:
    """One optimizer step over `grad_accum` micro-batches of every stream."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    micro = {s.name: [next(run.loaders[s.name]) for _ in range(cfg.grad_accum)] for s in run.streams}
    live = {s.name: [b for b in micro[s.name] if b["input_ids"] is not None] for s in run.streams}
    totals = {}  # per stream: global label-token count of this step
    for s in run.streams:
        n = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in live[s.name])
        totals[s.name] = max(1, int(run.global_sum(n)))
    counts = {}  # per auxiliary loss: global weight of its (query, layer) terms this step
    for aux in run.aux:
        for s in run.streams:
            for b in live[s.name]:
                b[aux.name] = aux.targets(b)
        counts[aux.name] = run.global_sum(sum(aux.count(b[aux.name]) for s in run.streams for b in live[s.name]))
    loss_sums = {s.name: 0.0 for s in run.streams}
    aux_sums = {aux.name: 0.0 for aux in run.aux}
    for a in range(cfg.grad_accum):
        # One backward per micro-step over every stream's loss, so each backward reaches every parameter any stream
        # uses: DDP and FSDP2 reduce on the last backward, DeepSpeed ZeRO-3's first backward of a step overwrites
        # each gradient partition (later ones add), and a stream that skips the image parts would break either.
        with micro_step(accelerator, model, last=a == cfg.grad_accum - 1):
            terms = []
            for s in run.streams:
                batch = micro[s.name][a]
                run.dropped += batch["dropped"]
                if batch["input_ids"] is None:
                    continue
                inputs = {k: v.to(accelerator.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
                labels = batch["labels"].to(accelerator.device)
                for aux in run.aux:
                    aux.arm(batch[aux.name], inputs.get("position_ids"))
                with accelerator.autocast():
                    # the model projects only labelled positions onto the vocabulary (skip_logits)
                    mean = model(**inputs, labels=labels, skip_logits=True).loss
                total = mean * int((labels[:, 1:] != IGNORE_INDEX).sum())
                if not torch.isfinite(total):
                    last_good = checkpoint.last_checkpoint(run.out)
                    raise NonFiniteLossError(
                        f"[{cfg.stage}] {s.name} loss is {total.item()} at step {step + 1}; stopped without saving. "
                        f"Last good checkpoint: {last_good or 'none'}. "
                        f"Lower the learning rate (now {run.scheduler.get_last_lr()[0]:g}) or check the data."
                    )
                terms.append(s.weight * total / totals[s.name] * run.world)
                for aux in run.aux:
                    term = aux.pop_loss()
                    if term is not None:
                        terms.append(aux.weight * term / max(counts[aux.name], 1) * run.world)
                        aux_sums[aux.name] += term.item()
                loss_sums[s.name] += total.item()
                run.seen += batch["input_ids"].shape[0]
            if terms:
                loss = torch.stack(terms).sum()
                if not loss.requires_grad:  # no batch reached a trained parameter (text only, the projector alone trained):
                    loss = loss + sum(0.0 * p.sum() for p in model.parameters() if p.requires_grad)  # a zero gradient,
                accelerator.backward(loss)  # and every process still makes this backward, as the engines need
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    losses = {s.name: run.global_sum(loss_sums[s.name]) / totals[s.name] for s in run.streams}
    aux_means = {name: run.global_sum(aux_sums[name]) / counts[name] for name in aux_sums if counts[name]}
    return StepResult(losses, aux_means, None if grad_norm is None else float(grad_norm))


def log_step(run: Run, done: int, result: StepResult) -> None:
    """One metrics.jsonl row: learning rate, time, throughput, losses (per stream too), auxiliary terms."""
    elapsed = time.perf_counter() - run.t0
    row: dict[str, Any] = {"step": done, "lr": run.scheduler.get_last_lr()[0], "elapsed_s": round(elapsed, 2),
                           "samples_per_s": round(run.seen * run.world / max(1e-9, elapsed), 2), "dropped": run.dropped}
    row["loss"] = sum(s.weight * result.losses[s.name] for s in run.streams)
    if len(run.streams) > 1:
        row.update({f"loss_{s.name}": result.losses[s.name] for s in run.streams})
    row.update(result.aux)
    if result.grad_norm is not None:
        row["grad_norm"] = result.grad_norm
    run.log.write(row)


def fit(
    cfg: TrainConfig,
    model: SphinxViForConditionalGeneration,
    processor: SphinxViProcessor,
    streams: list[Stream],
    lineage: dict,
    stop_after: int | None = None,
) -> Path:
    """Train `model` on `streams` per `cfg`; returns the directory of the final model.

    `stop_after` ends the run after that step without the final save (a simulated interruption).
    """
    run = setup(cfg, model, processor, streams)
    main = run.accelerator.is_main_process
    run.model.train()
    bar = tqdm(total=cfg.max_steps, initial=run.start, desc=cfg.stage, disable=not main, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    for step in range(run.start, cfg.max_steps):
        result = train_step(run, step)
        done = step + 1
        bar.update(1)
        shown = {name.split("_")[0]: f"{value:.3f}" for name, value in result.aux.items()}
        bar.set_postfix({**{k: f"{v:.3f}" for k, v in result.losses.items()}, **shown}, refresh=False)
        if done % cfg.log_every == 0 or done == cfg.max_steps or done == 1:
            log_step(run, done, result)
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            checkpoint.save_state(run.accelerator, run.out, done, cfg.keep_checkpoints)
        if stop_after is not None and done >= stop_after:
            bar.close()
            return run.out
    bar.close()
    for aux in run.aux:
        aux.remove()
    run.accelerator.wait_for_everyone()
    unwrapped = merge_lora(run.accelerator.unwrap_model(run.model))
    if run.restore_attention is not None:
        unwrapped.language_model.set_attn_implementation(run.restore_attention)  # the saved model uses the stock kernel
    final = checkpoint.save_final(run.accelerator, run.model, unwrapped, processor, run.out,
                                  {**lineage, "stage": cfg.stage, "steps": cfg.max_steps, "data": cfg.data})
    if main:
        plot_losses(run.out / "metrics.jsonl", run.out / "loss.png", title=f"{cfg.stage} ({run.out.name})")
        print(f"[{cfg.stage}] final model: {final}")
    return final
