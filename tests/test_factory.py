"""The factory: presets (seeded), parts from their own checkpoints, checkpoints and embedded names, downloads off."""

import copy

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, MistralConfig, MistralForCausalLM

from sphinx_vi import SphinxViConfig
from sphinx_vi.factory import (
    EMBEDDED_MODELS,
    build_from_config,
    build_from_preset,
    load_checkpoint,
    load_config_and_processor,
    load_model,
    resolve_checkpoint,
    save_checkpoint,
)
from sphinx_vi.text.tokenizer import TINY_TOKENIZER, load_tokenizer
from sphinx_vi.vision.base import CLIP_MEAN, CLIP_STD

VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = (build_from_preset("tiny", seed=s) for s in (0, 0, 1))
    pa, pb, pc = (next(iter(x.model.vision.projector.parameters())) for x in (a, b, c))
    assert (pa == pb).all() and not (pa == pc).all()


def _parts_config(tmp_path) -> SphinxViConfig:
    """A one-tower model whose CLIP tower and Mistral LLM are checkpoints on disk (the LLM one row short of `<image>`)."""
    torch.manual_seed(4)
    CLIPVisionModel(CLIPVisionConfig(**VIT)).save_pretrained(tmp_path / "clip")
    vocab = len(load_tokenizer(TINY_TOKENIZER))
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                max_position_embeddings=512, sliding_window=None)
    MistralForCausalLM(MistralConfig(vocab_size=vocab - 1, **text)).save_pretrained(tmp_path / "llm")
    vision = {"views_grid": 1, "resolution": 32, "grid_size": 4,
              "encoders": [{"backend": "clip_vit", "pretrained": str(tmp_path / "clip"), "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}]}
    return SphinxViConfig(vision=vision, text_config={"model_type": "mistral", "vocab_size": vocab, **text},
                          text_pretrained=str(tmp_path / "llm"), tokenizer=TINY_TOKENIZER)


def test_parts_load_from_their_checkpoints_and_the_given_config_is_not_changed(tmp_path):
    config = _parts_config(tmp_path)
    before = copy.deepcopy(config.to_dict())
    model, processor = build_from_config(config, load_weights=True)
    assert config.to_dict() == before  # the factory records the parts in a copy
    clip = CLIPVisionModel.from_pretrained(tmp_path / "clip")
    tower = model.vision.grid_encoders["clip_vit"]
    torch.testing.assert_close(tower.model.state_dict()["embeddings.patch_embedding.weight"],  # type: ignore[union-attr]
                               clip.state_dict()["embeddings.patch_embedding.weight"])
    recorded = model.config.vision_config.encoders[0].arch
    assert recorded["hidden_size"] == 32 and recorded["patch_size"] == 8  # the architecture the checkpoint brought
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer)  # grown by the `<image>` row

    save_checkpoint(tmp_path / "saved", model, processor)
    again, _ = load_checkpoint(tmp_path / "saved")  # rebuilds from the recorded architecture, no tower checkpoint needed
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_hub_ids_need_permission_for_the_tokenizer_too(monkeypatch, tiny_config):
    config = copy.deepcopy(tiny_config)
    config.tokenizer = "some-org/not-on-this-disk"
    monkeypatch.delenv("SPHINX_VI_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        build_from_config(config)
    monkeypatch.setenv("SPHINX_VI_ALLOW_DOWNLOAD", "1")  # allowed: the hub is asked (and, offline in tests, fails there)
    with pytest.raises(OSError) as err:
        build_from_config(config)
    assert "not a local directory" not in str(err.value)


def test_names_resolve_to_checkpoints_presets_or_a_clear_error(tmp_path):
    assert resolve_checkpoint("tiny-shapes") == EMBEDDED_MODELS["tiny-shapes"]
    assert load_model("tiny").model.config.layout.tokens_per_image == 115  # a preset by name
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a preset"):
        load_model("nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")


def test_config_and_processor_without_weights_are_what_loading_the_model_gives():
    for name in ("tiny-shapes", "tiny"):  # an embedded checkpoint, a preset
        loaded = load_model(name)
        config, processor = load_config_and_processor(name)
        assert config.to_dict() | {"_name_or_path": ""} == loaded.model.config.to_dict() | {"_name_or_path": ""}
        assert processor.settings == loaded.processor.settings
        assert processor.tokenizer.get_vocab() == loaded.processor.tokenizer.get_vocab()
        assert processor.tokenizer.chat_template == loaded.processor.tokenizer.chat_template
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a preset"):
        load_config_and_processor("nowhere")


def test_a_checkpoint_missing_weights_is_refused_not_filled_at_random(tmp_path):
    from safetensors.torch import load_file, save_file

    from sphinx_vi.weights import IncompleteWeightsError

    model, processor = build_from_preset("tiny")
    save_checkpoint(tmp_path / "m", model, processor)
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    state.pop("vision.projector.0.weight")
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(IncompleteWeightsError, match=r"checkpoint .*1 missing \(e.g. vision.projector.0.weight"):
        load_checkpoint(tmp_path / "m")


def test_checkpoints_load_by_path_through_transformers_auto_classes(tmp_path):
    """Importing sphinx_vi registers its config and model with AutoConfig and AutoModelForImageTextToText."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    model, processor = build_from_preset("tiny")
    save_checkpoint(tmp_path / "m", model, processor)
    assert type(AutoConfig.from_pretrained(tmp_path / "m")) is SphinxViConfig
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    assert type(auto) is type(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(auto.state_dict()[key], value)


def test_bf16_inference_answers_like_fp32_and_auto_follows_the_hardware(world_image):
    from sphinx_vi import SphinxVi
    from sphinx_vi.precision import cpu_has_bf16, resolve_dtype

    fp32 = SphinxVi.from_pretrained("tiny-shapes")
    bf16 = SphinxVi.from_pretrained("tiny-shapes", dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16 and fp32.model.dtype == torch.float32
    inputs = fp32.processor(fp32.processor.apply_chat_template([{"role": "user", "content": "<image>\nCó gì?"}]), [world_image])
    with torch.no_grad():
        a, b = fp32.model(**inputs).logits, bf16.model(**inputs).logits.float()
    assert (a - b).abs().max() < 0.25 * a.abs().max()  # bf16's 8-bit mantissa, through a 4-layer model
    box_a, box_b = fp32.ground(world_image, "hình tròn màu đỏ").box, bf16.ground(world_image, "hình tròn màu đỏ").box
    assert max(abs(x - y) for x, y in zip(box_a, box_b)) <= 0.05 * 128  # the same object, a digit apart at most
    assert resolve_dtype("auto") == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    with pytest.raises(ValueError, match="choose auto"):
        resolve_dtype("float16")  # type: ignore[arg-type]
