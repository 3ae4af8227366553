"""Typed training configuration: one dataclass, loaded from YAML, overridable from the command line.

Every field carries its documentation in `metadata["help"]`; `python -m sphinx_vi.train stage1 --help`
prints them. Nested configs (`guides.box`) are YAML mappings or dotted names (`--guides.box.weight 1`).
Unknown or mistyped fields are refused with the closest valid names.
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

PART_NAMES = ("projector", "llm", "llm_lora", "vision", "lm_head")


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A documented field; a list or dict default is copied per instance, a dataclass type is built per instance."""
    if isinstance(default, type) and is_dataclass(default):
        return field(default_factory=default, metadata={"help": help}, **kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)  # type: ignore[misc]
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class BoxGuideConfig:
    """Box-guided attention: guided heads of tokens that answer about one box attend to the visual tokens inside it."""

    weight: float = _f(0.0, "loss weight; 0 = off")
    layers: list[int] = _f([1, 2], "LLM layers (0-based, negative from the end) whose heads are guided")
    heads: int = _f(1, "how many heads (the first ones) of each guided layer are guided")
    lead_weight: float = _f(1.0, "weight of the positions that predict a box's or point's lead (its opening and "
                                 "first number, where the object is chosen) against the rest")

    def __post_init__(self) -> None:
        _check_guide(self, "box")
        if self.lead_weight <= 0:
            raise ValueError(f"guides.box.lead_weight must be > 0, got {self.lead_weight}")


@dataclass
class PhraseGuideConfig:
    """Phrase-guided attention: at the positions that choose a box, guided heads read the whole phrase it grounds."""

    weight: float = _f(0.0, "loss weight; 0 = off")
    layers: list[int] = _f([0], "LLM layers whose heads read the phrase (before the box-guided layers)")
    heads: int = _f(1, "how many heads (the first ones) of each phrase-guided layer are guided")

    def __post_init__(self) -> None:
        _check_guide(self, "phrase")


def _check_guide(guide: BoxGuideConfig | PhraseGuideConfig, name: str) -> None:
    if guide.weight < 0:
        raise ValueError(f"guides.{name}.weight is a loss weight, must be >= 0, got {guide.weight}")
    if guide.heads < 1:
        raise ValueError(f"guides.{name}.heads must be >= 1, got {guide.heads}")


@dataclass
class GuidesConfig:
    """The attention guides a run trains with (sphinx_vi/guidance)."""

    box: BoxGuideConfig = _f(BoxGuideConfig, "box-guided attention (REC boxes, detection lists, keypoints, REG)")
    phrase: PhraseGuideConfig = _f(PhraseGuideConfig, "phrase-guided attention (REC expression, category, <p>..</p>)")

    def active(self) -> list[tuple[str, BoxGuideConfig | PhraseGuideConfig]]:
        """(name, config) of every guide with a positive weight."""
        return [(name, g) for name, g in (("box", self.box), ("phrase", self.phrase)) if g.weight > 0]


@dataclass
class TrainConfig:
    """Everything a training run needs. Stage-specific fields are ignored by the other stage."""

    # --- what is trained, from where, to where ---
    stage: Literal["stage1", "stage2"] = _f("stage1", "stage1 (alignment on captions + text) or stage2 (task mixture)")
    model: str = _f("tiny-shapes", "preset name for a fresh model (its init is seeded by init_seed)")
    init: str | None = _f(None, "checkpoint directory to start from instead of a fresh preset (stage 2: the merged stage-1 model)")
    init_seed: int = _f(0, "seed of a fresh preset's weights; both stage-1 runs must share it to be averaged")
    data: str = _f("data/train", "data directory in the synthetic world's layout (llava/, captions/, text/)")
    out: str = _f("runs/stage1", "output directory: checkpoints, metrics.jsonl, loss.png, final model in final/")
    seed: int = _f(0, "data order and dropout; not the model init")
    # --- data ---
    captions: Literal["real", "synthetic"] = _f("real", "stage 1: which caption style to align on")
    text_batch_size: int = _f(8, "both stages: plain paragraphs (text/paragraphs.jsonl) per process and micro-step, "
                                 "a second loss that keeps the LLM writing")
    text_loss_weight: float = _f(1.0, "both stages: weight of the plain-paragraph loss (0 turns text mixing off)")
    mixture: dict[str, float] = _f(
        {"rec": 4.0, "reg": 1.0, "detection": 2.0, "vqa": 1.0, "keypoints": 1.0, "ocr": 0.5, "chart": 0.5, "grounded_caption": 0.5, "text": 0.5},
        "stage 2: dataset → sampling weight; names are llava/<name>.json, 'text' is text/instructions.json",
    )
    turns_per_image: int = _f(1, "stage 2: join up to N single-turn samples of one task, image and language into one "
                                 "multi-turn conversation (LLaVA-1.5 style: one image encoding, N answers with loss); 1 = off")
    max_length: int = _f(512, "samples longer than this (tokens, visual ones included) are skipped and counted")
    max_bad_fraction: float = _f(0.05, "stop with an error when more than this fraction of a source's rows are bad")
    num_workers: int = _f(0, "DataLoader worker processes")
    packing: bool = _f(False, "pack each batch's samples into rows of up to max_length tokens (block-diagonal "
                       "attention, positions restarting per sample): same samples and loss, less padding")
    # --- optimisation ---
    max_steps: int = _f(1000, "optimizer steps")
    batch_size: int = _f(16, "samples per device per micro-step")
    grad_accum: int = _f(1, "micro-steps per optimizer step")
    lr: float = _f(1e-3, "peak learning rate at reference_batch; scaled linearly with the global batch")
    reference_batch: int = _f(16, "global batch at which `lr` applies (Vistral-V's linear scaling rule)")
    warmup_steps: int = _f(50, "linear warmup steps, then cosine decay to min_lr_ratio·lr")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of the peak")
    weight_decay: float = _f(0.0, "AdamW weight decay on matrices (not norms, biases, embeddings of begin/end)")
    betas: list[float] = _f([0.9, 0.95], "AdamW betas")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    # --- what learns ---
    trainable: list[str] = _f(["projector", "llm"], f"parts that learn, any of {', '.join(PART_NAMES)}")
    lora_rank: int = _f(16, "LoRA rank when 'llm_lora' is trainable")
    lora_alpha: float | None = _f(None, "LoRA alpha; default 2·rank")
    lora_targets: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "LLM modules LoRA wraps")
    qlora: bool = _f(False, "load the LLM in 4-bit NF4 (needs CUDA and bitsandbytes) and train LoRA on it")
    guides: GuidesConfig = _f(GuidesConfig, "guided attention, an auxiliary loss per guide "
                              "(sphinx_vi/guidance): `guides.box` and `guides.phrase`, each off at weight 0")
    gradient_checkpointing: bool = _f(False, "recompute LLM activations in backward to save memory")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "auto = bf16 on a GPU that supports it, fp32 on the CPU (bf16 there: autocast, faster from width 256 up)")
    # --- bookkeeping ---
    save_every: int = _f(200, "checkpoint every N steps (and at the end); written atomically")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    log_every: int = _f(10, "steps between metric lines")
    resume: bool = _f(True, "continue from the latest checkpoint in `out` if there is one")

    def __post_init__(self) -> None:
        bad = [p for p in self.trainable if p not in PART_NAMES]
        if bad:
            raise ValueError(f"unknown trainable part(s) {bad}; choose from {', '.join(PART_NAMES)}")
        if "llm" in self.trainable and "llm_lora" in self.trainable:
            raise ValueError("choose 'llm' (full) or 'llm_lora', not both")
        for name, _guide in self.guides.active():
            if self.gradient_checkpointing:
                raise ValueError(f"guides.{name} recomputes attention from activations that gradient_checkpointing "
                                 "discards: turn one of them off")
        if self.qlora and "llm_lora" not in self.trainable:
            raise ValueError("qlora trains LoRA adapters: add 'llm_lora' to trainable")
        for name in ("max_steps", "batch_size", "grad_accum", "reference_batch", "turns_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def effective_lora_alpha(self) -> float:
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nested(f: Field, owner: type) -> type | None:
    """The dataclass type of a nested-config field, else None."""
    hint = typing.get_type_hints(owner)[f.name]
    return hint if isinstance(hint, type) and is_dataclass(hint) else None


def _leaves(cls: type, prefix: str = "") -> dict[str, tuple[type, Field]]:
    """Every settable field, by its dotted name (`lr`, `guides.box.weight`), with the dataclass that owns it."""
    out: dict[str, tuple[type, Field]] = {}
    for f in fields(cls):
        inner = _nested(f, cls)
        if inner is not None:
            out.update(_leaves(inner, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (cls, f)
    return out


FIELDS = _leaves(TrainConfig)  # dotted name → (owner, field)


def _closest(name: str) -> str:
    near = difflib.get_close_matches(name, FIELDS, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else f"; valid fields: {', '.join(FIELDS)}"


def _coerce(name: str, value: Any) -> Any:
    """YAML/CLI value of dotted field `name` → the field's type (with a clear error)."""
    owner, f = FIELDS[name]
    hint = typing.get_type_hints(owner)[f.name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is Literal:
            if value not in args:
                raise ValueError(f"must be one of {', '.join(map(str, args))}")
            return value
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError("must be true or false")
            return bool(value)
        if origin is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [args[0](v) for v in items]
        if origin is dict:
            if isinstance(value, str):  # "rec=4,reg=1"
                value = dict(kv.split("=", 1) for kv in value.split(",") if kv)
            return {str(k): args[1](v) for k, v in dict(value).items()}
        return hint(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config field {name!r}: cannot use {value!r} ({err})") from None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"guides": {"box": {"weight": 1}}} → {"guides.box.weight": 1}; leaf dicts (`mixture`) stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in FIELDS and any(n.startswith(name + ".") for n in FIELDS):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        inner = _nested(f, cls)
        if inner is not None:
            kwargs[f.name] = _build(inner, values, f"{prefix}{f.name}.")
        elif f"{prefix}{f.name}" in values:
            kwargs[f.name] = _coerce(f"{prefix}{f.name}", values[f"{prefix}{f.name}"])
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, **defaults: Any) -> TrainConfig:
    """YAML file (may be None) → TrainConfig, then `overrides` (e.g. from the CLI, dotted names) on top."""
    data: dict[str, Any] = _flatten(dict(defaults))
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config {path}: no such file")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config {path}: expected a mapping of field: value")
        data.update(_flatten(loaded))
    data.update(_flatten({k: v for k, v in (overrides or {}).items() if v is not None}))
    for name in data:
        if name not in FIELDS:
            raise ValueError(f"unknown config field {name!r}{_closest(name)}")
    return _build(TrainConfig, data)


def flag(name: str) -> str:
    """The command-line option of dotted field `name`: `--max-steps`, `--guides.box.weight`."""
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per settable field (dotted for nested ones), documented from the dataclasses."""
    for name, (_owner, f) in FIELDS.items():
        if name == "stage":
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        parser.add_argument(flag(name), dest=name, default=None, metavar="V",
                            help=f"{f.metadata['help']} (default: {default})")


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
