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
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from ..configuration import SphinxViConfig
from ..data.world.language import COLOURS, KINDS
from ..data.world.people import Person, draw_people, sample_people
from ..data.world.shapes import WorldConfig, background, draw_shapes, sample_shapes
from ..factory import build_from_config, save_checkpoint
from ..grounding.keypoints import COCO_KEYPOINTS
from ..presets import preset_config_dict
from ..train.lineage import fingerprint, write_lineage
from ..views import ViewConfig, make_views

COLOUR_INDEX = {c.en: i + 1 for i, c in enumerate(COLOURS)}  # 0 = background
KIND_INDEX = {k.en: i + 1 for i, k in enumerate(KINDS)}
PERSON_KIND = len(KINDS) + 1  # people scenes: the kind of a stick figure's pixels


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
    people_rate: float = 0.25  # share of scenes with stick-figure people (keypoint class + point digits per token)
    towers: tuple[str, ...] | None = None  # keep only these encoder backends of the preset (None: all of them)
    views_grid: int | None = None  # sub-image views K (None: the preset's)
    workers: int = 1  # 1: scenes are drawn in a background process while the towers train (the same scenes); 0: inline


def preset_variant(name: str, towers: tuple[str, ...] | None = None, views_grid: int | None = None) -> SphinxViConfig:
    """Preset `name` with only the `towers` encoder backends kept and `views_grid` K sub-images per side."""
    config = preset_config_dict(name)
    vision = config["vision"]
    if towers is not None:
        kept = [e for e in vision["encoders"] if e["backend"] in towers]
        if not kept:
            raise ValueError(f"{name}: no encoder among {towers}; it has {[e['backend'] for e in vision['encoders']]}")
        vision["encoders"] = kept
    if views_grid is not None:
        vision["views_grid"] = views_grid
    return SphinxViConfig(**config)


def _label_views(labels: Image.Image, views: ViewConfig) -> torch.Tensor:
    """(H, W) mode-"L" label map → (V, R, R) long labels, cut exactly like `make_views` cuts pixels."""
    cut = make_views(labels.convert("RGB"), views, (0, 0, 0), resample=Image.Resampling.NEAREST)  # (V, 3, R, R) in [0, 1]
    return (cut[:, 0] * 255).round().long()


def coordinate_digits(values: list[float], origins: list[float], span: float, size: int) -> list[int]:
    """Pixel coordinates → the digits the grammar writes for them in a view frame (tenths, hundredths each)."""
    digits = []
    for value, origin in zip(values, origins):
        u = min(max((value / size - origin) / span, 0.0), 0.999)
        text = f"{u:.2f}"  # as `grammar._fmt` writes it: "0.xy" (1.00 is folded into 0.99)
        text = "0.99" if text.startswith("1") else text
        digits += [int(text[2]), int(text[3])]
    return digits


def box_digits(box: tuple[float, float, float, float], size: int, frame: tuple[float, float, float]) -> list[int]:
    """Pixel box → the 8 digits the grammar writes for it in `frame` (tenths, hundredths of x1, y1, x2, y2)."""
    x0, y0, span = frame
    return coordinate_digits(list(box), [x0, y0, x0, y0], span, size)


@dataclass
class SceneBatch:
    """Views of n random scenes and their dense labels (per view: V = views per scene)."""

    pixels: torch.Tensor  # (n·V, 3, R, R)
    colour: torch.Tensor  # (n·V, R, R) colour index, 0 = none
    kind: torch.Tensor  # (n·V, R, R) kind index (people: PERSON_KIND), 0 = none
    instance: torch.Tensor  # (n·V, R, R) object index, 0 = none
    box_table: torch.Tensor  # (n·V, 1 + M, 8) digits of each object's box in the view's frame, row 0 unused
    keypoint: torch.Tensor  # (n·V, G²) COCO keypoint index + 1 of a visible keypoint in the cell, 0 = none
    keypoint_digits: torch.Tensor  # (n·V, G², 4) digits of that keypoint (x, y) in the view's frame, -100 = none


def _people_scene(rng: random.Random, world: WorldConfig, maps: dict[str, Image.Image]) -> tuple[Image.Image, list]:
    """Stick figures like the world's keypoint scenes; their pixels labelled in `maps` (kind = PERSON_KIND)."""
    img = background(rng, world)
    people = sample_people(rng, world.size, rng.randint(1, 2))
    state = rng.getstate()
    ghosts = [Person(dict(p.keypoints), p.box, (i + 1,) * 3) for i, p in enumerate(people)]
    draw_people(img, people, rng)  # marks keypoints behind the occluding board as v=1
    labels = Image.new("RGB", img.size, (0, 0, 0))
    replay = random.Random()
    replay.setstate(state)
    draw_people(labels, ghosts, replay)  # the same figures and boards, in label colours
    arr = torch.from_numpy(np.asarray(labels, dtype=np.uint8).copy())  # (H, W, 3)
    index = torch.where((arr[..., 0] == arr[..., 1]) & (arr[..., 1] == arr[..., 2]), arr[..., 0], torch.zeros_like(arr[..., 0]))
    index = torch.where(index <= len(people), index, torch.zeros_like(index))  # the grey board is not a person
    maps["instance"] = Image.fromarray(index.numpy().astype(np.uint8), mode="L")
    maps["kind"] = Image.fromarray(((index > 0).numpy() * PERSON_KIND).astype(np.uint8), mode="L")
    return img, people


def scene_batch(rng: random.Random, n: int, world: WorldConfig, views: ViewConfig, fill: tuple[int, int, int],
                grid: int = 8, people_rate: float = 0.0) -> SceneBatch:
    """n random scenes (shapes, or people with probability `people_rate`) and their dense labels."""
    pixels, colours, kinds, instances, tables, keypoints, keypoint_digits = [], [], [], [], [], [], []
    frames = views.frames
    for _ in range(n):
        maps = {name: Image.new("L", (world.size, world.size), 0) for name in ("colour", "kind", "instance")}
        table = torch.zeros(len(frames), 1 + world.max_objects, 8, dtype=torch.long)
        kp = torch.zeros(len(frames), grid * grid, dtype=torch.long)
        kp_digits = torch.full((len(frames), grid * grid, 4), -100, dtype=torch.long)
        if rng.random() < people_rate:
            img, people = _people_scene(rng, world, maps)
            for i, p in enumerate(people):
                for v, (x0, y0, span) in enumerate(frames):
                    table[v, i + 1] = torch.tensor(box_digits(p.box, world.size, (x0, y0, span)))
                    for k, name in enumerate(COCO_KEYPOINTS):
                        x, y, visible = p.keypoints[name]
                        u, w = (x / world.size - x0) / span, (y / world.size - y0) / span
                        if visible == 2 and 0 <= u < 1 and 0 <= w < 1:
                            cell = int(w * grid) * grid + int(u * grid)
                            kp[v, cell] = k + 1
                            kp_digits[v, cell] = torch.tensor(coordinate_digits([x, y], [x0, y0], span, world.size))
        else:
            shapes = sample_shapes(rng, world)
            img = draw_shapes(background(rng, world), shapes)
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
        tables.append(table)
        keypoints.append(kp)
        keypoint_digits.append(kp_digits)
    return SceneBatch(torch.cat(pixels), torch.cat(colours), torch.cat(kinds), torch.cat(instances), torch.cat(tables),
                      torch.cat(keypoints), torch.cat(keypoint_digits))


class SceneStream(IterableDataset):
    """`steps` scene batches from one generator seeded with `seed`, in order: drawn inline or, through a
    DataLoader worker, in a background process while the towers train (one worker, so the same batches)."""

    def __init__(self, seed: int, steps: int, n: int, world: WorldConfig, views: ViewConfig, fill: tuple[int, int, int],
                 grid: int, people_rate: float) -> None:
        self.seed, self.steps, self.n, self.world, self.views, self.fill = seed, steps, n, world, views, fill
        self.grid, self.people_rate = grid, people_rate

    def __iter__(self) -> Iterator[SceneBatch]:
        rng = random.Random(self.seed)
        for _ in range(self.steps):
            yield scene_batch(rng, self.n, self.world, self.views, self.fill, grid=self.grid, people_rate=self.people_rate)


def scene_batches(stream: SceneStream, workers: int) -> Iterator[SceneBatch]:
    """The stream's batches, drawn in a background process when `workers` is 1 (more would reorder them)."""
    if workers not in (0, 1):
        raise ValueError(f"stage 0 draws scenes inline (workers 0) or in one background process (1), not {workers}")
    if workers == 0:
        return iter(stream)
    return iter(DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4))


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
    """One linear probe per tower on its tokens resized to the common G×G grid: colour, kind,
    8 ten-way box digits, and, for people, which keypoint lies in the token and its 4 point digits."""

    def __init__(self, widths: dict[str, int], box_digits: bool = True) -> None:
        super().__init__()
        self.classes = (len(COLOURS) + 1, PERSON_KIND + 1)
        self.digit_heads = 8 if box_digits else 0
        self.keypoint_classes = len(COCO_KEYPOINTS) + 1
        out = sum(self.classes) + 10 * self.digit_heads + self.keypoint_classes + 40
        self.heads = nn.ModuleDict({name: nn.Linear(w, out) for name, w in widths.items()})

    def loss(self, features: dict[str, torch.Tensor], colour: torch.Tensor, kind: torch.Tensor,
             digits: torch.Tensor | None = None, keypoint: torch.Tensor | None = None,
             keypoint_digits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """features: name → (B, G², C); colour/kind: (B, G², classes) soft targets; digits: (B, G², 8);
        keypoint: (B, G²) class; keypoint_digits: (B, G², 4); -100 = no target."""
        total, stats = torch.zeros(()), {}
        nc, nk = self.classes
        nd, nkp = 10 * self.digit_heads, self.keypoint_classes
        for name, feats in features.items():
            logits = self.heads[name](feats)  # (B, G², nc + nk + 80 + 18 + 40)
            lc = -(colour * logits[..., :nc].log_softmax(-1)).sum(-1).mean()
            lk = -(kind * logits[..., nc:nc + nk].log_softmax(-1)).sum(-1).mean()
            total = total + lc + lk
            fg = colour[..., 0] < 0.5  # tokens mostly covered by a shape
            if fg.any():
                stats[f"{name}_colour_acc"] = (logits[..., :nc].argmax(-1) == colour.argmax(-1))[fg].float().mean().item()
                stats[f"{name}_kind_acc"] = (logits[..., nc:nc + nk].argmax(-1) == kind.argmax(-1))[fg].float().mean().item()
            if self.digit_heads and digits is not None and (digits >= 0).any():
                d_logits = logits[..., nc + nk:nc + nk + nd].unflatten(-1, (8, 10))  # (B, G², 8, 10)
                total = total + F.cross_entropy(d_logits.flatten(0, 2), digits.flatten(), ignore_index=-100)
                known = digits[..., 0::2] >= 0  # (B, G², 4)
                guess = d_logits.argmax(-1)  # (B, G², 8)
                stats[f"{name}_tenths_acc"] = (guess[..., 0::2] == digits[..., 0::2])[known].float().mean().item()
                stats[f"{name}_hundredths_acc"] = (guess[..., 1::2] == digits[..., 1::2])[known].float().mean().item()
            if keypoint is not None and keypoint_digits is not None and bool((keypoint_digits >= 0).any()):
                k_logits = logits[..., nc + nk + nd:nc + nk + nd + nkp]  # (B, G², 18)
                in_people = (keypoint_digits >= 0).all(-1).any(-1, keepdim=True).expand_as(keypoint)  # views showing a keypoint
                total = total + F.cross_entropy(k_logits[in_people], keypoint[in_people])
                p_logits = logits[..., nc + nk + nd + nkp:].unflatten(-1, (4, 10))  # (B, G², 4, 10)
                total = total + F.cross_entropy(p_logits.flatten(0, 2), keypoint_digits.flatten(), ignore_index=-100)
                has = keypoint > 0
                stats[f"{name}_keypoint_acc"] = (k_logits.argmax(-1) == keypoint)[has].float().mean().item()
        return total, stats


def pretrain_towers(cfg: TowerPretrainConfig, out: str | Path) -> Path:
    """Train the towers of a fresh `cfg.model` on dense labels; save the full model to `out`."""
    out = Path(out)
    model, processor = build_from_config(preset_variant(cfg.model, cfg.towers, cfg.views_grid), seed=cfg.init_seed)
    vision = model.vision
    G, views = vision.grid_size, vision.layout.views
    fill = processor.settings.pad_colour
    world = WorldConfig(max_objects=cfg.max_objects)
    towers = vision.grid_encoders
    torch.manual_seed(cfg.seed)  # the probes' init and any dropout: two runs of one command train the same towers
    probes = TowerProbes({name: t.width for name, t in towers.items()}, box_digits=cfg.box_digits)
    vision.set_towers_trainable(True)  # frozen towers would pass no gradient (their grad_context)
    params = [p for t in towers.values() for p in t.parameters()] + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / cfg.steps)).item())
    )
    for t in towers.values():
        t.train()
    stream = SceneStream(cfg.seed, cfg.steps, cfg.batch_size, world, views, fill, G, cfg.people_rate)
    log, t0 = [], time.perf_counter()
    bar = tqdm(scene_batches(stream, cfg.workers), total=cfg.steps, desc="stage0 towers", dynamic_ncols=True)
    for step, scenes in enumerate(bar):
        feats = {name: vision._grid_tokens(t(scenes.pixels))[:, 1:] for name, t in towers.items()}  # (B, G², C)
        loss, stats = probes.loss(feats, _soft_targets(scenes.colour, probes.classes[0], G),
                                  _soft_targets(scenes.kind, probes.classes[1], G),
                                  cell_box_digits(scenes.instance, scenes.box_table, G), scenes.keypoint, scenes.keypoint_digits)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage 0: loss is {loss.item()} at step {step + 1}; stopped without saving "
                                     f"(lower --lr, now {sched.get_last_lr()[0]:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        row = {"step": step + 1, "loss": round(loss.item(), 4), **{k: round(v, 3) for k, v in stats.items()}}
        log.append(row)
        bar.set_postfix(loss=f"{loss.item():.3f}", **{k.replace("clip_", "").replace("_acc", ""): f"{v:.2f}" for k, v in stats.items()})
    vision.set_towers_trainable(False)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, processor)
    summary = {"config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 1), "final": log[-1] if log else {}}
    (out / "stage0.json").write_text(json.dumps(summary, indent=2))
    with open(out / "metrics.jsonl", "w") as f:
        for row in log:
            f.write(json.dumps(row) + "\n")
    variant = "".join([f" towers={','.join(cfg.towers)}" if cfg.towers else "", f" K={cfg.views_grid}" if cfg.views_grid else ""])
    write_lineage(out, base=fingerprint(model), init=f"preset:{cfg.model}@{cfg.init_seed}{variant}", stage="stage0", steps=cfg.steps)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m sphinx_vi.experiments.towers --out DIR [--max-steps N] ...`"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m sphinx_vi.experiments.towers",
                                description="stage 0 for random-init towers: dense colour/kind/box-digit labels "
                                            "from the synthetic world")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="tiny-shapes", help="preset whose towers are trained")
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cfg = TowerPretrainConfig(model=args.model, init_seed=args.init_seed, steps=args.max_steps,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    try:
        print(f"model with pretrained towers: {pretrain_towers(cfg, args.out)}")
    except (KeyError, ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
