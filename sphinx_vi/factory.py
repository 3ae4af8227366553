"""The single way to build or load a model with its processor: from a preset, its parts, or a checkpoint.

Users (through `SphinxVi`), training, evaluation, the benchmarks and the tools all come through
here, so that a preset, the embedding resize for added tokens, the parts' weight loading and the
embedded checkpoints mean the same thing everywhere.

    build_from_preset("tiny", seed=0)            random init, seeded
    build_from_preset(name, load_weights=True)   towers and LLM from their own checkpoints
    load_checkpoint("runs/s2/final")             a directory written by `save_pretrained`
    load_checkpoint("tiny-shapes")               a checkpoint embedded in the package
    load_model(name_or_path)                     a checkpoint if there is one, else a preset
    save_checkpoint(dir, model, processor)       what load_checkpoint reads
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from .configuration import SphinxViConfig
from .modeling import SphinxViForConditionalGeneration
from .precision import DType, resolve_dtype
from .presets import list_presets, preset_config_dict
from .processing import SphinxViProcessor
from .quantization import Quantization, quantize_language_model
from .vision.base import VisionBackend, allow_download_default, resolve_weights
from .vision.mixed import MixedVisionEncoder, build_backend
from .weights import check_complete

# Checkpoints shipped inside the package, loadable by name with no path.
EMBEDDED_MODELS = {"tiny-shapes": Path(__file__).resolve().parent / "assets" / "models" / "tiny-shapes"}


class LoadedModel(NamedTuple):
    model: SphinxViForConditionalGeneration
    processor: SphinxViProcessor


def build_from_preset(name: str, seed: int = 0, *, load_weights: bool = False, allow_download: bool | None = None,
                      device: str | torch.device = "cpu", dtype: DType | torch.dtype | None = None) -> LoadedModel:
    """Preset `name`: random init from `seed`, or (`load_weights`) its parts' own checkpoints.

    Downloads (hub ids, open_clip tags) need `allow_download=True` or SPHINX_VI_ALLOW_DOWNLOAD=1.
    """
    return build_from_config(SphinxViConfig(**preset_config_dict(name)), seed, load_weights=load_weights,
                             allow_download=allow_download, device=device, dtype=dtype)


def build_from_config(config: SphinxViConfig, seed: int = 0, *, load_weights: bool = False,
                      allow_download: bool | None = None, device: str | torch.device = "cpu",
                      dtype: DType | torch.dtype | None = None) -> LoadedModel:
    """A model of `config` with its processor; the embeddings grow to fit the tokenizer if it is larger."""
    allow = allow_download_default() if allow_download is None else allow_download
    processor = SphinxViProcessor.from_model_config(config, allow_download=allow)
    if load_weights:
        model = assemble_from_parts(config, allow_download=allow)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SphinxViForConditionalGeneration(config)
    if len(processor.tokenizer) > model.get_input_embeddings().weight.shape[0]:  # type: ignore[index]
        model.resize_token_embeddings(len(processor.tokenizer))
    return LoadedModel(model.to(device, resolve_dtype(dtype, device)), processor)  # type: ignore[arg-type]


def assemble_from_parts(config: SphinxViConfig, *, allow_download: bool) -> SphinxViForConditionalGeneration:
    """The towers and the LLM from the checkpoints `config` names; the returned model's config (a
    copy: `config` is not changed) records the loaded architectures, so a saved model rebuilds
    without the original checkpoints."""
    backends = [build_backend(spec, load_weights=True, allow_download=allow_download) for spec in config.vision_config.encoders]
    lm = load_language_model(config, allow_download=allow_download)
    resolved = _with_part_architectures(config, backends, lm)
    vision = MixedVisionEncoder(resolved.vision_config, backends, llm_width=lm.config.hidden_size)
    return SphinxViForConditionalGeneration(resolved, vision=vision, language_model=lm)


def load_language_model(config: SphinxViConfig, *, allow_download: bool) -> PreTrainedModel:
    """`config.text_pretrained` through `AutoModelForCausalLM`, its vocabulary grown to `text_config.vocab_size`
    (room for `<image>`); random from `text_config` when no checkpoint is named."""
    if not config.text_pretrained:
        return AutoModelForCausalLM.from_config(config.text_config)
    ref, is_local = resolve_weights(config.text_pretrained, allow_download, "language model")
    lm = AutoModelForCausalLM.from_pretrained(ref, local_files_only=is_local or not allow_download)
    if lm.config.vocab_size < config.text_config.vocab_size:
        lm.resize_token_embeddings(config.text_config.vocab_size)
    return lm


def _with_part_architectures(config: SphinxViConfig, backends: list[VisionBackend], lm: PreTrainedModel) -> SphinxViConfig:
    resolved = copy.deepcopy(config)
    vision = resolved.vision_config
    for spec, backend in zip(vision.encoders, backends):
        spec.arch = backend.architecture()
        spec.num_queries = backend.spec.num_queries  # a loaded Q-Former brings its own query count
    resolved.vision = vision.to_dict()
    resolved.text_config = lm.config
    return resolved


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A checkpoint directory: the path itself, or an embedded checkpoint's directory by name."""
    directory = Path(name_or_path).expanduser()
    if not directory.exists() and str(name_or_path) in EMBEDDED_MODELS:
        directory = EMBEDDED_MODELS[str(name_or_path)]
        if not (directory / "config.json").exists():
            raise FileNotFoundError(
                f"the embedded model {name_or_path!r} is not built in this checkout; build it with "
                "`python -m sphinx_vi.experiments.learn --embed` (about an hour on a CPU)"
            )
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"{name_or_path}: not a sphinx_vi checkpoint directory (no config.json); presets: {', '.join(list_presets())}"
        )
    return directory


def load_checkpoint(name_or_path: str | Path, *, device: str | torch.device = "cpu",
                    dtype: DType | torch.dtype | None = None, quantization: Quantization | None = None) -> LoadedModel:
    """A directory written by `save_pretrained` (model, tokenizer, processor), or an embedded model by name;
    `quantization` (nf4, int8) loads its LLM's linear layers through bitsandbytes."""
    directory = resolve_checkpoint(name_or_path)
    loaded: Any = SphinxViForConditionalGeneration.from_pretrained(directory, output_loading_info=True)
    model, info = loaded
    check_complete(f"checkpoint {directory}", info["missing_keys"], info["unexpected_keys"], info.get("mismatched_keys", ()))
    model = model.to(device, resolve_dtype(dtype, device))
    if quantization is not None:
        quantize_language_model(model, quantization, device)
    return LoadedModel(model, SphinxViProcessor.from_pretrained(directory, config=model.config))


def save_checkpoint(directory: str | Path, model: PreTrainedModel, processor: SphinxViProcessor,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write what `load_checkpoint` reads: the model (safetensors, `state_dict` if given: gathered
    shards), its tokenizer and the processor settings."""
    model.save_pretrained(directory, state_dict=state_dict)
    processor.save_pretrained(directory)
    return Path(directory)


def _kind(name_or_path: str) -> str:
    """How a model name resolves: a path on disk wins (checkpoint), then an embedded name, else a preset name."""
    if Path(name_or_path).expanduser().exists():
        return "checkpoint"
    return "embedded" if name_or_path in EMBEDDED_MODELS else "preset"


def provenance(name_or_path: str) -> dict[str, Any]:
    """What a model name stands for: `kind` (embedded, checkpoint, preset) and, for checkpoints, what made them
    (`lineage.json` of a training run, `conversion.json` of a converted release) and how they scored
    (`evaluation.json`, written by `python -m sphinx_vi.eval --record`)."""
    kind = _kind(name_or_path)
    out: dict[str, Any] = {"kind": kind, "name": name_or_path}
    if kind == "preset":
        return out
    directory = EMBEDDED_MODELS[name_or_path] if kind == "embedded" else Path(name_or_path).expanduser()
    for record in ("lineage.json", "conversion.json", "evaluation.json"):
        if (directory / record).exists():
            out[record.split(".")[0]] = json.loads((directory / record).read_text())
    return out


def load_config_and_processor(name_or_path: str) -> tuple[SphinxViConfig, SphinxViProcessor]:
    """What `load_model(name_or_path)` would load, without the weights: the model config and the processor."""
    if _kind(name_or_path) != "preset":
        directory = resolve_checkpoint(name_or_path)
        config = SphinxViConfig.from_pretrained(directory)
        return config, SphinxViProcessor.from_pretrained(directory, config=config)
    if name_or_path not in list_presets():
        raise FileNotFoundError(f"{name_or_path!r} is neither a checkpoint directory nor a preset ({', '.join(list_presets())})")
    config = SphinxViConfig(**preset_config_dict(name_or_path))
    return config, SphinxViProcessor.from_model_config(config, allow_download=allow_download_default())


def load_model(name_or_path: str, *, seed: int = 0, device: str | torch.device = "cpu",
               dtype: DType | torch.dtype | None = None, quantization: Quantization | None = None) -> LoadedModel:
    """A checkpoint directory if one exists at that path (or an embedded name), else a preset of that name."""
    kind = _kind(name_or_path)
    if kind != "preset":
        return load_checkpoint(name_or_path, device=device, dtype=dtype, quantization=quantization)
    if name_or_path in list_presets():
        return build_from_preset(name_or_path, seed=seed, device=device, dtype=dtype)
    raise FileNotFoundError(f"{name_or_path!r} is neither a checkpoint directory nor a preset ({', '.join(list_presets())})")
