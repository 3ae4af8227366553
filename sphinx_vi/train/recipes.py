"""The training recipes as plain functions: stage1, stage2 (and merge in merge.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from accelerate import PartialState

from ..data import EncodedDataset, Sample, SampleEncoder, mix
from ..data.formats import load_captions, load_llava, load_text
from ..data.samples import LoadResult
from ..data.turns import join_turns
from ..factory import LoadedModel, build_from_preset, load_checkpoint
from .config import TrainConfig
from .engines import process_group
from .lineage import fingerprint, read_lineage
from .loop import Stream, fit


class DataDirError(FileNotFoundError):
    """The data directory is missing or lacks the files a stage needs."""


def _require(path: Path, what: str, cfg: TrainConfig) -> Path:
    if not Path(cfg.data).is_dir():
        raise DataDirError(f"data directory {cfg.data!r} does not exist (make one: python -m sphinx_vi.data synth --out {cfg.data})")
    if not path.exists():
        raise DataDirError(f"{what}: {path} not found in data directory {cfg.data!r}")
    return path


def _checked(result: LoadResult, cfg: TrainConfig) -> list[Sample]:
    result.report.check(cfg.max_bad_fraction)
    if result.report.bad:
        print(result.report.summary())
    if not result.samples:
        raise ValueError(f"{result.report.source}: no usable samples (empty dataset)")
    return result.samples


def load_start(cfg: TrainConfig) -> tuple[LoadedModel, dict]:
    """The model a run starts from, and its lineage (the fingerprint of the base weights)."""
    if cfg.init:
        init = Path(cfg.init)
        if not (init / "config.json").exists() or not any(init.glob("*.safetensors")):
            raise FileNotFoundError(f"--init {cfg.init!r} is not a sphinx_vi checkpoint (needs config.json and *.safetensors)")
        start = load_checkpoint(init)
        lineage = read_lineage(init)
        base = lineage.get("base") or fingerprint(start.model)
        return start, {"base": base, "init": str(init), "parents": lineage.get("parents", [])}
    start = build_from_preset(cfg.model, seed=cfg.init_seed)
    return start, {"base": fingerprint(start.model), "init": f"preset:{cfg.model}@{cfg.init_seed}"}


def languages(*sample_sets: list[Sample]) -> dict[str, int]:
    """Training samples per language (`lineage.json` records it; the studio header shows it)."""
    counts = Counter(s.lang or "unknown" for samples in sample_sets for s in samples)
    return dict(counts.most_common())


def _stream(name: str, samples: list[Sample], encoder: SampleEncoder, batch: int, weight: float, cfg: TrainConfig) -> Stream:
    lengths = [encoder.length(s) for s in samples]  # memoised: repeated and already-checked samples cost nothing
    keep = [i for i, n in enumerate(lengths) if n <= cfg.max_length]
    if len(keep) < len(samples):
        print(f"[{cfg.stage}] {name}: {len(samples) - len(keep)} samples longer than max_length {cfg.max_length} skipped")
    if not keep:
        raise ValueError(f"{name}: every sample is longer than max_length {cfg.max_length}")
    samples, lengths = [samples[i] for i in keep], [lengths[i] for i in keep]
    return Stream(name, EncodedDataset(samples, encoder), lengths, batch, weight)


def stage1(cfg: TrainConfig, stop_after: int | None = None) -> Path:
    """Alignment: caption data (real or synthetic style) plus, in every step, a text-only batch."""
    data = Path(cfg.data)
    captions = _checked(load_captions(_require(data / "captions" / f"{cfg.captions}.jsonl", "captions", cfg)), cfg)
    (model, processor), lineage = load_start(cfg)
    encoder = SampleEncoder(processor, cfg.max_length)
    text, streams = text_stream(cfg, encoder)
    streams.append(_stream("caption", captions, encoder, cfg.batch_size, 1.0, cfg))
    return fit(cfg, model, processor, streams, {**lineage, "captions": cfg.captions, "languages": languages(captions, text)},
               stop_after)


def text_stream(cfg: TrainConfig, encoder: SampleEncoder) -> tuple[list[Sample], list[Stream]]:
    """The plain-paragraph samples and their stream (a second loss, every step, in both stages: the LLM keeps
    writing text, as SPHINX mixes text-only data into both); none when `text_loss_weight` is 0."""
    if cfg.text_loss_weight <= 0:
        return [], []
    path = _require(Path(cfg.data) / "text" / "paragraphs.jsonl", "text-only paragraphs (or set text_loss_weight: 0)", cfg)
    text = _checked(load_text(path), cfg)
    return text, [_stream("text", text, encoder, cfg.text_batch_size, cfg.text_loss_weight, cfg)]


def stage2_samples(cfg: TrainConfig, encoder: SampleEncoder | None = None) -> list[Sample]:
    """The stage-2 mixture; with `encoder`, joined conversations stay within `max_length` tokens."""
    data = Path(cfg.data)
    fits = (lambda s: encoder.length(s) <= cfg.max_length) if encoder is not None else None
    sources: dict[str, list[Sample]] = {}
    for name, weight in cfg.mixture.items():
        if weight <= 0:
            continue
        if name == "text":
            sources[name] = _checked(load_text(_require(data / "text" / "instructions.json", "text instructions", cfg)), cfg)
        else:
            rows = _checked(load_llava(_require(data / "llava" / f"{name}.json", f"task {name!r}", cfg)), cfg)
            sources[name] = join_turns(rows, cfg.turns_per_image, seed=cfg.seed, fits=fits)
    world = PartialState(**process_group()).num_processes  # the mixture depends on the global batch, not on the world size
    total = cfg.max_steps * cfg.batch_size * cfg.grad_accum * world
    return mix(sources, cfg.mixture, max(total, 1), seed=cfg.seed)


def stage2(cfg: TrainConfig, stop_after: int | None = None) -> Path:
    """Instruction tuning on a weighted task mixture plus text-only instructions (loss on answers only), and the
    plain-paragraph loss of stage 1 beside it."""
    (model, processor), lineage = load_start(cfg)
    encoder = SampleEncoder(processor, cfg.max_length)
    samples = stage2_samples(cfg, encoder)
    text, streams = text_stream(cfg, encoder)
    streams.append(_stream("mixture", samples, encoder, cfg.batch_size, 1.0, cfg))
    return fit(cfg, model, processor, streams, {**lineage, "languages": languages(samples, text)}, stop_after)
