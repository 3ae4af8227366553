"""Data loader throughput against what a training step consumes: `python -m sphinx_vi.bench.loader`.

Writes a synthetic world, mixes its stage-2 tasks, and times (a) the DataLoader (decode images,
build views, tokenise, collate) with 0, 1 and 2 worker processes, and (b) the tiny model's
training step (forward + loss + backward + AdamW) on the same batches. Both in this run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data import EncodedDataset, LengthGroupedBatches, SampleEncoder, collate, mix
from ..data.formats import load_llava, load_text
from ..data.world.generate import synthesize
from ..factory import build_from_preset
from ..generation import Generator
from . import command_parser, write_json


def stage2_samples(world: Path, num: int, seed: int = 0):
    files = {p.stem: load_llava(p).samples for p in sorted((world / "llava").glob("*.json"))}
    files["text"] = load_text(world / "text" / "instructions.json").samples
    return mix(files, {k: 1.0 for k in files}, num, seed)


def loader_rate(dataset, lengths, batch_size: int, workers: int, batches: int, pad_id: int) -> float:
    sampler = LengthGroupedBatches(lengths, batch_size, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=partial(collate, pad_token_id=pad_id),
                        persistent_workers=False)
    it = iter(loader)
    next(it)  # warm-up (worker start)
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it)
        n += batch["input_ids"].shape[0]
    return n / (time.perf_counter() - t)


def train_rate(gen: Generator, batches: list[dict], repeats: int) -> float:
    model = gen.model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for k in range(repeats + 2):
        batch = batches[k % len(batches)]
        t = time.perf_counter()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"], labels=batch["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k >= 2:
            times.append((time.perf_counter() - t) / batch["input_ids"].shape[0])
    model.eval()
    return 1 / statistics.median(times)


def run(images: int = 300, batch_size: int = 8, batches: int = 30, preset: str = "tiny") -> dict:
    torch.set_num_threads(2)
    gen = Generator(*build_from_preset(preset))
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp)
        synthesize(world, images, seed=0, progress=False)
        samples = stage2_samples(world, batch_size * (batches + 4) * 2)
        encoder = SampleEncoder(gen.processor)
        lengths = [encoder.length(s) for s in samples]
        ds = EncodedDataset(samples, encoder)
        pad = gen.processor.tokenizer.pad_token_id
        rates = {w: loader_rate(ds, lengths, batch_size, w, batches, pad) for w in (0, 1, 2)}
        sample_batches = [collate([ds[i] for i in b], pad) for b in list(LengthGroupedBatches(lengths, batch_size))[:8]]
        consume = train_rate(gen, sample_batches, repeats=10)
    return {
        "preset": preset,
        "batch_size": batch_size,
        "loader_samples_per_s": {str(k): v for k, v in rates.items()},
        "train_step_samples_per_s": consume,
        "loader_vs_consumption": {str(k): v / consume for k, v in rates.items()},
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = command_parser("python -m sphinx_vi.bench.loader", __doc__)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    r = run(args.images, args.batch_size, args.batches, args.preset)
    print(f"{'what':<36}{'samples/s':>12}{'× consumption':>16}")
    for w, v in r["loader_samples_per_s"].items():
        print(f"{'loader, ' + w + ' worker(s)':<36}{v:>12.1f}{r['loader_vs_consumption'][w]:>16.2f}")
    print(f"{'training step (' + r['preset'] + ', batch ' + str(r['batch_size']) + ')':<36}{r['train_step_samples_per_s']:>12.1f}{1.0:>16.2f}")
    write_json(args.out, r)


if __name__ == "__main__":
    main()
