import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, TextIteratorStreamer

from sphinx_vi import ImageTokenMismatchError, SphinxViConfig, SphinxViForConditionalGeneration
from sphinx_vi.presets import preset_config_dict


@pytest.fixture(scope="module")
def model(tiny):
    return tiny.model


def _inputs(tiny, n_images=1, prompt="<image>\nMô tả bức ảnh."):
    images = [torch.randint(0, 255, (24 + 8 * i, 40, 3), dtype=torch.uint8).numpy() for i in range(n_images)]
    text = tiny.processor.apply_chat_template([{"role": "user", "content": prompt}])
    return tiny.processor(text, images)


def test_forward_shapes_and_loss(tiny, model):
    inputs = _inputs(tiny)
    labels = inputs["input_ids"].clone()
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss)


def test_several_images_per_sample(tiny, model):
    inputs = _inputs(tiny, n_images=2, prompt="<image> và <image>: khác nhau thế nào?")
    assert inputs["pixel_values"].shape[0] == 2
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 2 * model.config.layout.tokens_per_image
    logits = model(**inputs).logits
    swapped = dict(inputs, pixel_values=inputs["pixel_values"].flip(0))
    assert not torch.allclose(logits, model(**swapped).logits)  # order of images matters


def test_token_count_mismatch_is_a_clear_error(tiny, model):
    inputs = _inputs(tiny)
    ids = inputs["input_ids"]
    first = int((ids[0] == model.config.image_token_id).nonzero()[0])
    ids = torch.cat([ids[:, :first], ids[:, first + 1 :]], dim=1)  # one placeholder short
    with pytest.raises(ImageTokenMismatchError, match=r"hold 114 <image> tokens but 1 image\(s\) give 115 visual tokens"):
        model(input_ids=ids, pixel_values=inputs["pixel_values"])
    with pytest.raises(ImageTokenMismatchError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="placeholder"):
        tiny.processor("<image> <image>", [torch.zeros(4, 4, 3, dtype=torch.uint8).numpy()])


def test_llm_logits_equal_the_plain_transformers_llm_on_text(tmp_path, model):
    """Parity: the text path is exactly the causal LM's own forward."""
    model.language_model.save_pretrained(tmp_path / "lm")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    ids = torch.randint(5, model.config.text_config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ours = model(input_ids=ids, attention_mask=mask).logits
    theirs = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs)


def test_save_and_load_round_trip(tmp_path, tiny, model):
    tiny.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    loaded = SphinxViForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    inputs = _inputs(tiny)
    torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_generate_matches_step_by_step_forward_and_encodes_images_once(tiny, model):
    inputs = _inputs(tiny)
    calls = []
    hook = model.vision.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        assert len(calls) == 1
        beams = model.generate(**inputs, max_new_tokens=6, num_beams=3, do_sample=False)
        assert len(calls) == 2 and beams.shape[0] == 1
    finally:
        hook.remove()
    ids = inputs["input_ids"]
    for _ in range(6):  # no cache, image re-encoded each step: the reference
        logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[:, -1]
        logits[:, model.config.image_token_id] = -float("inf")
        logits[:, model.config.text_config.eos_token_id] = -float("inf")
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


def test_sampling_is_seeded_and_streaming_yields_the_same_text(tiny, model):
    inputs = _inputs(tiny)
    torch.manual_seed(5)
    a = model.generate(**inputs, max_new_tokens=8, do_sample=True, top_k=20)
    torch.manual_seed(5)
    b = model.generate(**inputs, max_new_tokens=8, do_sample=True, top_k=20)
    assert torch.equal(a, b)
    streamer = TextIteratorStreamer(tiny.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    import threading

    greedy = {}
    thread = threading.Thread(target=lambda: greedy.update(out=model.generate(**inputs, max_new_tokens=8, do_sample=False, streamer=streamer)))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    new = greedy["out"][0, inputs["input_ids"].shape[1]:]
    assert streamed == tiny.processor.tokenizer.decode(new, skip_special_tokens=True)


def test_the_image_token_is_never_generated(model):
    assert model.config.image_token_id in model.generation_config.suppress_tokens


def test_lora_attaches_to_the_language_model(tiny_config):
    torch.manual_seed(0)
    m = SphinxViForConditionalGeneration(tiny_config)
    lora = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    ids = torch.randint(5, 100, (1, 9))
    out = lora(input_ids=ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if p.requires_grad)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _llm(vocab, d, layers, ffn, kv):
    """Parameters of a LLaMA/Mistral decoder: untied embeddings and head, GQA attention, SwiGLU MLP, RMSNorms."""
    return 2 * vocab * d + layers * (2 * d * d + 2 * d * kv + 3 * d * ffn + 2 * d) + d


def test_plain_sphinx_is_one_view_of_sphinx_1k():
    cfg = SphinxViConfig(**preset_config_dict("sphinx"))
    assert cfg.layout.tokens_per_image == 291 and cfg.layout.num_views == 1 and cfg.chat_template == "sphinx"
    assert [e.backend for e in cfg.vision_config.encoders] == [e.backend for e in SphinxViConfig(**preset_config_dict("sphinx-1k")).vision_config.encoders]


@pytest.mark.parametrize("preset", ["sphinx-1k", "sphinx-v2-1k", "sphinx-vi-1k"])
def test_sphinx_presets_build_sphinx_1ks_visual_side_on_the_meta_device(preset):
    cfg = SphinxViConfig(**preset_config_dict(preset))
    with torch.device("meta"):
        m = SphinxViForConditionalGeneration(cfg)
    # 5 views (global + 2×2) × (begin + 32 queries + cls + 16×16 grid + end), right after BOS in SPHINX's prompt
    assert cfg.layout.tokens_per_image == 5 * (1 + 32 + 1 + 256 + 1) == 1455
    assert list(m.vision.encoders) == ["clip_vit", "clip_convnext", "dinov2"]  # SPHINX's concatenation order
    assert m.vision.projector[0].in_features == 1024 + 3072 + 1536
    assert list(m.vision.sources) == ["eva"] and m.vision.qformer.spec.source == "eva"  # BLIP-2's own EVA feeds the Q-Former
    assert isinstance(m.vision.qformer.source_proj, torch.nn.Identity)  # 1408 wide: no adapter
    assert _count(m.vision.encoders["clip_vit"]) == pytest.approx(303.2e6, rel=0.01)  # CLIP ViT-L/14 vision
    assert _count(m.vision.encoders["dinov2"]) == pytest.approx(1.1365e9, rel=0.01)  # DINOv2 ViT-g/14
    assert _count(m.vision.encoders["clip_convnext"]) == pytest.approx(843e6, rel=0.02)  # ConvNeXt-XXL trunk
    assert _count(m.vision.sources["eva"]) == pytest.approx(0.986e9, rel=0.01)  # EVA ViT-g/14 in BLIP-2
    assert cfg.pad_colour == (122, 116, 104) and cfg.layout.views.global_from_high
    if preset == "sphinx-vi-1k":  # Vistral-7B-Chat (Mistral: 32 layers, d 4096, GQA 8 kv heads, ffn 14336) + `<image>`
        assert _count(m.language_model) == _llm(38370, 4096, 32, 14336, 1024) and cfg.text_config.sliding_window == 4096
        assert _count(m) == pytest.approx(10.69e9, rel=0.01) and cfg.chat_template is None  # Vistral's own template
    else:  # LLaMA-2-13B (40 layers, d 5120, ffn 13824, no GQA) + `<image>`
        assert _count(m.language_model) == _llm(32001, 5120, 40, 13824, 5120) and cfg.chat_template == "sphinx"
        assert _count(m) == pytest.approx(16.42e9, rel=0.01)


@pytest.mark.parametrize("preset, tokens, llm, total", [
    ("llava-1.5-7b", 576, _llm(32001, 4096, 32, 11008, 4096), 7.06e9),  # Vicuna-7B v1.5 (LLaMA-2-7B) + `<image>`
    ("vistral-v-7b", 255, _llm(38370, 4096, 32, 14336, 1024), 7.41e9),  # Vistral-7B-Chat + `<image>`
])
def test_llava_family_presets_on_the_meta_device(preset, tokens, llm, total):
    cfg = SphinxViConfig(**preset_config_dict(preset))
    with torch.device("meta"):
        m = SphinxViForConditionalGeneration(cfg)
    assert cfg.layout.tokens_per_image == tokens and m.vision.image_begin is None  # no markers, no cls
    assert _count(m.language_model) == llm and _count(m) == pytest.approx(total, rel=0.005)
    tower = next(iter(m.vision.encoders.values()))
    assert _count(tower) == pytest.approx(303.5e6 if preset == "llava-1.5-7b" else 92.9e6, rel=0.01)  # CLIP-L/336, SigLIP-B/16


def test_position_features_survive_save_and_load(tmp_path):
    """Regression: nothing the model computes at init may be lost when from_pretrained builds it on `meta`."""
    from sphinx_vi import SphinxVi

    vi = SphinxVi.from_preset("tiny-shapes", seed=0)
    vi.save_pretrained(tmp_path / "m")
    again = SphinxVi.from_pretrained(tmp_path / "m")
    R = vi.model.config.layout.views.resolution
    px = torch.rand(1, vi.model.vision.layout.num_views, 3, R, R)
    torch.testing.assert_close(again.model.vision(px), vi.model.vision(px))
