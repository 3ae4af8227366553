"""The one training loop behind both stages, on accelerate (CPU, DDP, FSDP, DeepSpeed from the same code).

Data order is a pure function of (seed, step): every process computes the same global batch and
takes its slice, so a resumed run sees exactly the batches an uninterrupted one would, and N
processes see exactly what one process sees at the same global batch. The loss is a sum over
label tokens divided by the global token count, so gradients match across world sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import (
    IGNORE_INDEX,
    EncodedDataset,
    LengthGroupedBatches,
    collate,
    collate_packed,
)
from ..modeling import SphinxViForConditionalGeneration
from ..packed_attention import use_packed_attention
from ..processing import SphinxViProcessor
from .box_attention import BoxAttention, PhraseAttention
from .config import TrainConfig, save_config
from .lineage import write_lineage
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


def _precision(cfg: TrainConfig) -> str:
    if cfg.precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "no" if cfg.precision == "fp32" else cfg.precision


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*[0-9]"))


def fit(
    cfg: TrainConfig,
    model: SphinxViForConditionalGeneration,
    processor: SphinxViProcessor,
    streams: list[Stream],
    lineage: dict,
    stop_after: int | None = None,
) -> Path:
    """Train `model` on `streams` per `cfg`; returns the directory of the final model."""
    # Text-only batches leave the vision side unused: DDP must not wait for its gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=_precision(cfg), cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    out = Path(cfg.out)
    set_seed(cfg.seed + rank)  # dropout / sampling only; data order and init do not depend on it

    peak_lr, global_batch = scaled_lr(cfg, world)
    attention = use_packed_attention(model.language_model) if cfg.packing else None  # Σ len² attention for packed rows
    counts = apply_trainable(model, cfg)
    guides = _guides(model, processor.tokenizer, cfg)  # name → (attention guide, loss weight)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        print(f"[{cfg.stage}] learning rate {cfg.lr:g} × global batch {global_batch} / reference {cfg.reference_batch} = {peak_lr:g}")
        print(f"[{cfg.stage}] {world} process(es), precision {_precision(cfg)}; trainable: "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=tuple(cfg.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=cfg))
    # The scheduler is not `prepare`d: accelerate would step it once per process per step, and our
    # data order does not depend on the world size. It is still saved with every checkpoint.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    log = MetricsLog(out / "metrics.jsonl", enabled=main)
    if cfg.resume and _checkpoints(out):
        last = _checkpoints(out)[-1]
        accelerator.load_state(str(last))
        start = json.loads((last / "state.json").read_text())["step"]
        log.truncate_after(start)
        if main:
            print(f"[{cfg.stage}] resumed from {last} at step {start}")

    pad = processor.tokenizer.pad_token_id
    loaders = {}
    for s in streams:
        batches = _GlobalBatches(s.lengths, s.batch_size * world, rank, world, cfg.seed, start * cfg.grad_accum)
        collate_fn = partial(collate_packed, capacity=cfg.max_length) if cfg.packing else collate
        loaders[s.name] = iter(DataLoader(s.dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                                          collate_fn=partial(collate_fn, pad_token_id=pad)))
    model.train()
    t0, seen, dropped = time.perf_counter(), 0, 0
    interactive = sys.stderr.isatty()
    bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.stage, disable=not main, dynamic_ncols=True,
               mininterval=0.1 if interactive else 30.0)  # a log file gets a line every 30 s
    for step in range(start, cfg.max_steps):
        micro = {s.name: [next(loaders[s.name]) for _ in range(cfg.grad_accum)] for s in streams}
        totals = {}
        for s in streams:  # global label-token count of this step, per stream
            n = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro[s.name] if b["input_ids"] is not None)
            totals[s.name] = max(1, int(accelerator.reduce(torch.tensor(n, device=accelerator.device), "sum")))
        guided = {name: 0.0 for name in guides}  # per guide: global weight of its (query, layer) terms this step
        for name, (guide, _) in guides.items():
            for s in streams:
                for b in micro[s.name]:
                    if b["input_ids"] is not None:
                        b[name] = guide.targets(b["input_ids"], b["labels"], b.get("position_ids"))
                        guided[name] += float(b[name][0].sum()) * len(guide.layers)
            guided[name] = float(accelerator.reduce(torch.tensor(guided[name], device=accelerator.device), "sum"))
        loss_sums = {s.name: 0.0 for s in streams}
        guide_sums = {name: 0.0 for name in guides}
        for a in range(cfg.grad_accum):
            for si, s in enumerate(streams):
                batch = micro[s.name][a]
                dropped += batch["dropped"]
                if batch["input_ids"] is None:
                    continue
                inputs = {k: v.to(accelerator.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
                labels = batch["labels"].to(accelerator.device)
                for name, (guide, _) in guides.items():
                    guide.use_targets(*batch[name], inputs.get("position_ids"))
                last = a == cfg.grad_accum - 1 and si == len(streams) - 1
                with accelerator.autocast(), (accelerator.no_sync(model) if not last else _null()):
                    # the model projects only labelled positions onto the vocabulary (skip_logits)
                    mean = model(**inputs, labels=labels, skip_logits=True).loss
                    total = mean * int((labels[:, 1:] != IGNORE_INDEX).sum())
                    if not torch.isfinite(total):
                        raise NonFiniteLossError(
                            f"[{cfg.stage}] {s.name} loss is {total.item()} at step {step + 1}; stopped without saving. "
                            f"Last good checkpoint: {_checkpoints(out)[-1] if _checkpoints(out) else 'none'}. "
                            f"Lower the learning rate (now {scheduler.get_last_lr()[0]:g}) or check the data."
                        )
                    loss = s.weight * total / totals[s.name] * world
                    for name, (guide, weight) in guides.items():
                        term = guide.pop_loss()
                        if term is not None:
                            loss = loss + weight * term / max(guided[name], 1) * world
                            guide_sums[name] += term.item()
                    accelerator.backward(loss)
                loss_sums[s.name] += total.item()
                seen += batch["input_ids"].shape[0]
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses = {s.name: float(accelerator.reduce(torch.tensor(loss_sums[s.name], device=accelerator.device), "sum")) / totals[s.name] for s in streams}
        done = step + 1
        bar.update(1)
        shown = {name.split("_")[0]: f"{guide_sums[name] / guided[name]:.3f}" for name in guides if guided[name]}
        bar.set_postfix({**{k: f"{v:.3f}" for k, v in losses.items()}, **shown}, refresh=False)
        if done % cfg.log_every == 0 or done == cfg.max_steps or done == 1:
            row = {"step": done, "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - t0, 2),
                   "samples_per_s": round(seen * world / max(1e-9, time.perf_counter() - t0), 2), "dropped": dropped}
            row["loss"] = sum(s.weight * losses[s.name] for s in streams)
            if len(streams) > 1:
                row.update({f"loss_{s.name}": losses[s.name] for s in streams})
            for name in guides:
                if guided[name]:
                    row[name] = float(accelerator.reduce(torch.tensor(guide_sums[name], device=accelerator.device), "sum")) / guided[name]
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            log.write(row)
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            _save_checkpoint(accelerator, out, done, cfg.keep_checkpoints)
        if stop_after is not None and done >= stop_after:
            bar.close()
            return out  # simulated interruption (tests)
    bar.close()
    for guide, _ in guides.values():
        guide.remove()
    final = out / "final"
    accelerator.wait_for_everyone()
    unwrapped = merge_lora(accelerator.unwrap_model(model))
    if attention is not None:
        unwrapped.language_model.set_attn_implementation(attention)  # the saved model uses the stock kernel
    state = accelerator.get_state_dict(model)  # gathers ZeRO-3 / FSDP shards (LoRA already merged in place)
    if main:
        unwrapped.eval()
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(tmp, state_dict=state)
        processor.save_pretrained(tmp)
        write_lineage(tmp, **lineage, stage=cfg.stage, steps=cfg.max_steps, data=cfg.data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        plot_losses(out / "metrics.jsonl", out / "loss.png", title=f"{cfg.stage} ({Path(cfg.out).name})")
        print(f"[{cfg.stage}] final model: {final}")
    accelerator.wait_for_everyone()
    return final


def _guides(model, tokenizer, cfg: TrainConfig) -> dict[str, tuple[BoxAttention, float]]:
    """The attention guides `cfg` turns on, by the name their mean term is logged under, with their loss weights."""
    guides: dict[str, tuple[BoxAttention, float]] = {}
    if cfg.box_attention > 0:
        guides["box_attention"] = (BoxAttention(model, tokenizer, model.config.image_token_id, cfg.box_attention_layers,
                                                cfg.box_attention_heads, cfg.box_attention_lead_weight), cfg.box_attention)
    if cfg.phrase_attention > 0:
        guides["phrase_attention"] = (PhraseAttention(model, tokenizer, model.config.image_token_id, cfg.phrase_attention_layers,
                                                      cfg.phrase_attention_heads), cfg.phrase_attention)
    return guides


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save_checkpoint(accelerator: Accelerator, out: Path, step: int, keep: int) -> None:
    """accelerate's full state (model, optimizer, scheduler, RNG) into a temp dir, then an atomic rename."""
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
        for old in _checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
