"""Stage 0, for towers that start from random weights: dense colour and kind labels from the world.

A real SPHINX starts from pretrained CLIP / DINOv2 towers whose patch features already name what
is where. The tiny-shapes model has no pretrained towers, and training them through the LLM loss
alone collapses them (reports/learning). This stage gives the tiny towers what pretraining gives
real ones: every grid token is trained, through a linear probe per tower, to predict the colour
and the kind of the shape under it (soft labels = the fraction of the token's pixels) and the
box of that shape in the view's own frame, spelt as the grammar's digits (tenths and hundredths
of x1, y1, x2, y2: 8 ten-way heads). So the tokens of an object carry, linearly, what the LLM
has to write about it; the LLM still has to find which object the phrase means. The scenes
are drawn on the fly by the synthetic world; the probes are thrown away and the towers are saved
inside a full model, which stage 1 then starts from (`--init`), towers frozen.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from ..api import SphinxVi
from ..data.world.language import COLOURS, KINDS
from ..data.world.shapes import WorldConfig, background, draw_shapes, sample_shapes
from ..views import ViewConfig, make_views
from .lineage import fingerprint, write_lineage

COLOUR_INDEX = {c.en: i + 1 for i, c in enumerate(COLOURS)}  # 0 = background
KIND_INDEX = {k.en: i + 1 for i, k in enumerate(KINDS)}


@dataclass
class TowerPretrainConfig:
    """Stage-0 knobs (the world is the default synthetic world: 1–4 shapes, distractors, clutter)."""

    model: str = "tiny-shapes"  # preset whose towers are trained
    init_seed: int = 0  # the preset's init seed (the base every later stage shares)
    steps: int = 600
    batch_size: int = 16  # scenes per step (each gives V views)
    lr: float = 2e-3
    warmup_steps: int = 30
    seed: int = 0  # scene sampling
    max_objects: int = 4
    box_digits: bool = True  # also train the per-token box-digit heads


def _label_views(labels: Image.Image, views: ViewConfig) -> torch.Tensor:
    """(H, W) mode-"L" label map → (V, R, R) long labels, cut exactly like `make_views` cuts pixels."""
    cut = make_views(labels.convert("RGB"), views, (0, 0, 0), resample=Image.NEAREST)  # (V, 3, R, R) in [0, 1]
    return (cut[:, 0] * 255).round().long()


def box_digits(box: tuple[float, float, float, float], size: int, frame: tuple[float, float, float]) -> list[int]:
    """Pixel box → the 8 digits the grammar writes for it in `frame` (tenths, hundredths of x1, y1, x2, y2)."""
    x0, y0, span = frame
    digits = []
    for value, origin in zip(box, (x0, y0, x0, y0)):
        u = min(max((value / size - origin) / span, 0.0), 0.999)
        text = f"{u:.2f}"  # as `grammar._fmt` writes it: "0.xy" (1.00 is folded into 0.99)
        text = "0.99" if text.startswith("1") else text
        digits += [int(text[2]), int(text[3])]
    return digits


def scene_batch(rng: random.Random, n: int, world: WorldConfig, views: ViewConfig, fill: tuple[int, int, int]):
    """n random scenes → views (n·V, 3, R, R), colour, kind and instance labels (n·V, R, R) and
    the digits of every instance's box in each view's frame (n·V, 1 + max_objects, 8), row 0 unused."""
    pixels, colours, kinds, instances, digits = [], [], [], [], []
    frames = views.frames
    for _ in range(n):
        shapes = sample_shapes(rng, world)
        img = draw_shapes(background(rng, world), shapes)
        maps = {name: Image.new("L", img.size, 0) for name in ("colour", "kind", "instance")}
        table = torch.zeros(len(frames), 1 + world.max_objects, 8, dtype=torch.long)
        for i, s in enumerate(shapes):  # drawn in the same order, so later shapes cover earlier ones as in the image
            ImageDraw.Draw(maps["colour"]).polygon(s.polygon, fill=COLOUR_INDEX[s.colour.en])
            ImageDraw.Draw(maps["kind"]).polygon(s.polygon, fill=KIND_INDEX[s.kind.en])
            ImageDraw.Draw(maps["instance"]).polygon(s.polygon, fill=i + 1)
            for v, frame in enumerate(frames):
                table[v, i + 1] = torch.tensor(box_digits(s.box, world.size, frame))
        pixels.append(make_views(img, views, fill))
        colours.append(_label_views(maps["colour"], views))
        kinds.append(_label_views(maps["kind"], views))
        instances.append(_label_views(maps["instance"], views))
        digits.append(table)
    return torch.cat(pixels), torch.cat(colours), torch.cat(kinds), torch.cat(instances), torch.cat(digits)


def cell_box_digits(instances: torch.Tensor, table: torch.Tensor, grid: int, min_cover: float = 0.15) -> torch.Tensor:
    """Instance labels (B, R, R) + digit table (B, 1 + M, 8) → (B, G², 8) box digits of the shape
    covering most of each grid cell, -100 (ignored) where shapes cover less than `min_cover` of it."""
    cover = _soft_targets(instances, table.shape[1], grid)  # (B, G², 1 + M)
    frac, idx = cover[..., 1:].max(-1)  # (B, G²): the most-covering shape
    out = torch.gather(table, 1, (idx + 1).unsqueeze(-1).expand(-1, -1, 8))  # (B, G², 8)
    return out.masked_fill((frac < min_cover).unsqueeze(-1), -100)


def _soft_targets(labels: torch.Tensor, classes: int, grid: int) -> torch.Tensor:
    """(B, R, R) labels → (B, G², classes): the fraction of each grid cell's pixels per class."""
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()  # (B, C, R, R)
    cells = F.adaptive_avg_pool2d(one_hot, grid)  # (B, C, G, G)
    return cells.flatten(2).transpose(1, 2)  # (B, G², C)


class TowerProbes(nn.Module):
    """One linear probe per tower (colour, kind and, optionally, 8 ten-way box digits) on its
    tokens resized to the common G×G grid."""

    def __init__(self, widths: dict[str, int], box_digits: bool = True) -> None:
        super().__init__()
        self.classes = (len(COLOURS) + 1, len(KINDS) + 1)
        self.digit_heads = 8 if box_digits else 0
        out = sum(self.classes) + 10 * self.digit_heads
        self.heads = nn.ModuleDict({name: nn.Linear(w, out) for name, w in widths.items()})

    def loss(self, features: dict[str, torch.Tensor], colour: torch.Tensor, kind: torch.Tensor,
             digits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """features: name → (B, G², C); colour/kind: (B, G², classes) soft targets; digits: (B, G², 8), -100 = none."""
        total, stats = 0.0, {}
        nc, nk = self.classes
        for name, feats in features.items():
            logits = self.heads[name](feats)  # (B, G², nc + nk + 80)
            lc = -(colour * logits[..., :nc].log_softmax(-1)).sum(-1).mean()
            lk = -(kind * logits[..., nc:nc + nk].log_softmax(-1)).sum(-1).mean()
            total = total + lc + lk
            fg = colour[..., 0] < 0.5  # tokens mostly covered by a shape
            if fg.any():
                stats[f"{name}_colour_acc"] = (logits[..., :nc].argmax(-1) == colour.argmax(-1))[fg].float().mean().item()
                stats[f"{name}_kind_acc"] = (logits[..., nc:nc + nk].argmax(-1) == kind.argmax(-1))[fg].float().mean().item()
            if self.digit_heads and digits is not None and (digits >= 0).any():
                d_logits = logits[..., nc + nk:].unflatten(-1, (8, 10))  # (B, G², 8, 10)
                total = total + F.cross_entropy(d_logits.flatten(0, 2), digits.flatten(), ignore_index=-100)
                known = digits[..., 0::2] >= 0  # (B, G², 4)
                guess = d_logits.argmax(-1)  # (B, G², 8)
                stats[f"{name}_tenths_acc"] = (guess[..., 0::2] == digits[..., 0::2])[known].float().mean().item()
                stats[f"{name}_hundredths_acc"] = (guess[..., 1::2] == digits[..., 1::2])[known].float().mean().item()
        return total, stats


def pretrain_towers(cfg: TowerPretrainConfig, out: str | Path) -> Path:
    """Train the towers of a fresh `cfg.model` on dense labels; save the full model to `out`."""
    out = Path(out)
    vi = SphinxVi.from_preset(cfg.model, seed=cfg.init_seed)
    vision = vi.model.vision
    vcfg, G = vision.config, vision.config.grid_size
    views = ViewConfig(grid=vcfg.views_grid, resolution=vcfg.resolution)
    fill = vi.processor.settings.pad_colour
    world = WorldConfig(max_objects=cfg.max_objects)
    towers = dict(vision.encoders.items())
    probes = TowerProbes({name: t.width for name, t in towers.items()}, box_digits=cfg.box_digits)
    vision.set_towers_trainable(True)  # frozen towers would pass no gradient (their grad_context)
    params = [p for t in towers.values() for p in t.parameters()] + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / cfg.steps)).item())
    )
    for t in towers.values():
        t.train()
    rng = random.Random(cfg.seed)
    log, t0 = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="stage0 towers", dynamic_ncols=True)
    for step in bar:
        pixels, colour, kind, instance, table = scene_batch(rng, cfg.batch_size, world, views, fill)
        feats = {name: vision._grid_tokens(t(pixels))[:, 1:] for name, t in towers.items()}  # (B, G², C)
        loss, stats = probes.loss(feats, _soft_targets(colour, probes.classes[0], G), _soft_targets(kind, probes.classes[1], G),
                                  cell_box_digits(instance, table, G))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        row = {"step": step + 1, "loss": round(loss.item(), 4), **{k: round(v, 3) for k, v in stats.items()}}
        log.append(row)
        bar.set_postfix(loss=f"{loss.item():.3f}", **{k.replace("clip_", "").replace("_acc", ""): f"{v:.2f}" for k, v in stats.items()})
    vision.set_towers_trainable(False)
    vi.model.eval()
    out.mkdir(parents=True, exist_ok=True)
    vi.save_pretrained(out)
    summary = {"config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 1), "final": log[-1] if log else {}}
    (out / "stage0.json").write_text(json.dumps(summary, indent=2))
    with open(out / "metrics.jsonl", "w") as f:
        for row in log:
            f.write(json.dumps(row) + "\n")
    write_lineage(out, base=fingerprint(vi.model), init=f"preset:{cfg.model}@{cfg.init_seed}", stage="stage0", steps=cfg.steps)
    return out
