"""The performance features are correct: LLaVA import parity, skip_logits, packing, the plan, the bench ratios."""

from __future__ import annotations

import pytest
import torch

from sphinx_vi import SphinxVi
from sphinx_vi.bench.parity import ParitySize, build_pair, check_parity, normalise
from sphinx_vi.data import SampleEncoder, collate, collate_packed, pack_rows
from sphinx_vi.data.formats import load_llava
from sphinx_vi.data.world.generate import synthesize
from sphinx_vi.text.tokens import IGNORE_INDEX

SMALL = ParitySize("test", hidden=32, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=2, image_size=56, vocab=2000)


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(2)
    return build_pair(SMALL)


@pytest.fixture(scope="module")
def encoded(pair, tmp_path_factory):
    """Real stage-2 samples (several tasks, images) encoded for the pair's processor."""
    _, vi = pair
    world = tmp_path_factory.mktemp("perf_world")
    synthesize(world, 12, seed=3, progress=False)
    enc = SampleEncoder(vi.processor, max_length=1024)
    samples = []
    for task in ("rec", "detection", "vqa", "grounded_caption"):
        samples += [enc(s) for s in load_llava(world / "llava" / f"{task}.json").samples[:3]]
    return samples


def _inputs(batch):
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}


def test_llava_import_gives_the_same_logits_and_greedy_ids(pair, encoded):
    hf, vi = pair
    batch = collate(encoded[:4], 0)
    diff = check_parity(hf, vi, batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
    assert diff < 1e-4
    prompt = batch["input_ids"][:1, :40]
    n_img = int((prompt == vi.model.config.image_token_id).sum()) // vi.model.config.layout.tokens_per_image
    views = batch["pixel_values"][:n_img]
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, suppress_tokens=[4], pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
        a = hf.generate(input_ids=prompt, pixel_values=normalise(views), **kw)
        b = vi.model.generate(input_ids=prompt, pixel_values=views, **kw)
    assert torch.equal(a, b)


def test_llava_variants_we_cannot_reproduce_are_refused():
    from transformers import LlavaConfig

    from sphinx_vi.bench.parity import llava_config
    from sphinx_vi.convert.llava import UnsupportedLlavaError, sphinx_vi_config_from_llava

    cfg: LlavaConfig = llava_config(SMALL)
    cfg.vision_feature_layer = [-2, -1]
    with pytest.raises(UnsupportedLlavaError, match="several layers"):
        sphinx_vi_config_from_llava(cfg, tokenizer="builtin:tiny")


def test_skip_logits_loss_equals_the_full_logits_loss(pair, encoded):
    hf, vi = pair
    batch = collate(encoded[:6], 0)
    model = vi.model
    with torch.no_grad():
        full = model(**_inputs(batch), labels=batch["labels"], skip_logits=False)
        fast = model(**_inputs(batch), labels=batch["labels"], skip_logits=True)
        reference = hf(**{**_inputs(batch), "pixel_values": normalise(batch["pixel_values"])}, labels=batch["labels"]).loss
    assert fast.logits is None and full.logits is not None
    torch.testing.assert_close(fast.loss, full.loss)
    torch.testing.assert_close(fast.loss, reference, rtol=1e-5, atol=1e-6)


def test_pack_rows_keeps_every_sample_once_and_within_capacity():
    lengths = [300, 20, 120, 500, 80, 80, 700, 5]
    rows = pack_rows(lengths, 512)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 512 for r in rows if len(r) > 1)
    assert len(rows) < len(lengths)


def test_packed_batch_gives_the_unpacked_loss_and_gradients(pair, encoded):
    _, vi = pair
    model = vi.model
    padded = collate(encoded, 0)
    packed = collate_packed(encoded, 0, capacity=4 * max(len(s) for s in encoded))
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # fewer rows
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # less padding
    assert int((packed["labels"] != IGNORE_INDEX).sum()) == int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    model.train()
    grads = []
    for batch in (padded, packed):
        model.zero_grad(set_to_none=True)
        loss = model(**_inputs(batch), labels=batch["labels"]).loss
        loss.backward()
        grads.append((loss.detach(), model.vision.projector[0].weight.grad.clone()))
    model.eval()
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


def test_packed_attention_equals_the_block_diagonal_mask(pair, encoded):
    from sphinx_vi.packed_attention import PACKED_SDPA, use_packed_attention

    _, vi = pair
    model = vi.model
    batch = collate_packed(encoded, 0, capacity=4 * max(len(s) for s in encoded))
    assert batch["input_ids"].shape[0] < len(encoded)
    model.train()
    results = []
    for packed_kernel in (False, True):
        model.zero_grad(set_to_none=True)
        restore = use_packed_attention(model.language_model) if packed_kernel else None
        assert model.language_model.config._attn_implementation == (PACKED_SDPA if packed_kernel else "sdpa")
        loss = model(**_inputs(batch), labels=batch["labels"]).loss
        loss.backward()
        results.append((loss.detach(), model.vision.projector[0].weight.grad.clone()))
        if restore:
            model.language_model.set_attn_implementation(restore)
    model.eval()
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # generation with a cache is unaffected by the packed kernel
        use_packed_attention(model.language_model)
        ids = collate(encoded[:1], 0)
        out = model.generate(input_ids=ids["input_ids"], pixel_values=ids["pixel_values"], max_new_tokens=4, min_new_tokens=4,
                             pad_token_id=0, eos_token_id=None)
        model.language_model.set_attn_implementation("sdpa")
        ref = model.generate(input_ids=ids["input_ids"], pixel_values=ids["pixel_values"], max_new_tokens=4, min_new_tokens=4,
                             pad_token_id=0, eos_token_id=None)
    assert torch.equal(out, ref)


def test_training_with_packing_matches_training_without(tmp_path):
    from sphinx_vi.train.config import load_config
    from sphinx_vi.train.metrics import read_metrics
    from sphinx_vi.train.recipes import stage2

    world = tmp_path / "w"
    synthesize(world, 16, seed=0, progress=False)
    common = dict(stage="stage2", model="tiny", data=str(world), max_steps=3, batch_size=4, log_every=1, save_every=100,
                  warmup_steps=1, lr=1e-3, reference_batch=4, mixture={"rec": 1.0, "detection": 1.0, "text": 0.5})
    stage2(load_config(None, {**common, "out": str(tmp_path / "plain")}))
    stage2(load_config(None, {**common, "out": str(tmp_path / "packed"), "packing": True}))
    plain = [r["loss"] for r in read_metrics(tmp_path / "plain" / "metrics.jsonl")]
    packed = [r["loss"] for r in read_metrics(tmp_path / "packed" / "metrics.jsonl")]
    assert len(plain) == len(packed) == 3
    assert packed == pytest.approx(plain, rel=1e-4)
    import json

    saved = json.loads((tmp_path / "packed" / "final" / "config.json").read_text())
    assert "sdpa_packed" not in json.dumps(saved)  # the saved model loads without our kernel registered


def test_plan_counts_flops_and_memory_from_the_model():
    from sphinx_vi.bench.plan import plan

    p = plan("tiny")
    tc = SphinxVi.from_preset("tiny").model.config.text_config
    head_dim = tc.hidden_size // tc.num_attention_heads
    assert p["kv_cache_bytes_per_1k_tokens"] == 1000 * 2 * tc.num_hidden_layers * tc.num_key_value_heads * head_dim * 2
    assert p["weights_bf16_gb"] == pytest.approx(p["total_parameters"] * 2 / 1e9)
    assert p["weights_llm_nf4_rest_bf16_gb"] < p["weights_bf16_gb"]
    s2 = p["stages"]["stage2"]
    per = s2["flops_per_image_sample"]
    # the decoder's forward + backward is at least 6 FLOPs per trainable weight per token
    decoder_weights = sum(w.numel() for n, w in SphinxVi.from_preset("tiny").model.language_model.model.layers.named_parameters())
    assert per["decoder"] >= 6 * decoder_weights * per["sequence_length"] * 0.95
    assert s2["gpu_hours"] == pytest.approx(s2["total_flops"] / (312e12 * 0.4) / 3600)


def test_bench_ratios_are_ours_over_hf_with_higher_better():
    from sphinx_vi.bench.suite import _summarise

    def run(m, v):
        return {"metrics": {m: [v, v]}, "median": {m: v}, "peak_rss_mb": 1.0, "workload_rss_mb": 0.5}

    times = _summarise("train", {"ours": [run("step_s", 1.0), run("step_s", 2.0)], "hf": [run("step_s", 3.0), run("step_s", 4.0)]})
    assert times["ratios"]["step_s"]["ratio"] == pytest.approx(3.5 / 1.5)  # hf time ÷ our time
    assert times["ratios"]["step_s"]["min"] == pytest.approx(2.0) and times["ratios"]["step_s"]["max"] == pytest.approx(3.0)
    rates = _summarise("packing", {"ours": [run("useful_tokens_per_s", 300.0)], "hf": [run("useful_tokens_per_s", 100.0)],
                                   "ours_padded": [run("useful_tokens_per_s", 250.0)]})
    assert rates["ratios"]["useful_tokens_per_s"]["ratio"] == pytest.approx(3.0)  # our rate ÷ hf rate
    assert rates["ratios"]["useful_tokens_per_s_vs_ours_padded"]["ratio"] == pytest.approx(1.2)
