import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sphinx_vi import SphinxVi
from sphinx_vi.bench import distributed
from sphinx_vi.train import NonFiniteLossError, load_config
from sphinx_vi.train.__main__ import main as train_main
from sphinx_vi.train.config import TrainConfig
from sphinx_vi.train.merge import LineageMismatchError, merge
from sphinx_vi.train.metrics import read_metrics
from sphinx_vi.train.parts import apply_trainable, qlora_quantization_config
from sphinx_vi.train.recipes import stage1, stage2
from sphinx_vi.train.schedule import lr_factor, scaled_lr

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(train_world):
    return train_world


def _cfg(world, out, **kw):
    base = dict(model="tiny", data=str(world), out=str(out), batch_size=4, text_batch_size=2, max_steps=4,
                warmup_steps=1, log_every=1, save_every=2, lr=1e-3, reference_batch=4, max_length=1024,
                mixture={"rec": 2.0, "detection": 1.0, "keypoints": 1.0, "text": 1.0})
    base.update(kw)
    return load_config(None, base)


def test_config_files_load_and_mistakes_are_named(tmp_path):
    for f in sorted((REPO / "train" / "configs").glob("*.yaml")):
        cfg = load_config(f)
        assert cfg.stage in f.name and cfg.max_steps > 0
    (tmp_path / "bad.yaml").write_text("stage: stage1\nbatch_szie: 8\n")
    with pytest.raises(ValueError, match=r"unknown config field 'batch_szie'; did you mean batch_size"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="config field 'max_steps'"):
        load_config(None, {"max_steps": "many"})
    with pytest.raises(ValueError, match="unknown trainable part"):
        load_config(None, {"trainable": "projector,llm_lroa"})
    cfg = load_config(None, {"trainable": "projector,llm_lora", "mixture": "rec=2,vqa=1", "resume": "false"})
    assert cfg.trainable == ["projector", "llm_lora"] and cfg.mixture == {"rec": 2.0, "vqa": 1.0} and cfg.resume is False
    assert cfg.effective_lora_alpha == 2 * cfg.lora_rank


def test_nested_guide_config_from_yaml_flags_and_saved_config(tmp_path):
    """`guides.box` is a YAML mapping or dotted names; a run's config.yaml loads back to the same config."""
    from sphinx_vi.train.config import save_config

    (tmp_path / "g.yaml").write_text("guides:\n  box: {weight: 1.0, heads: 2}\n  phrase:\n    layers: [0, 1]\n")
    cfg = load_config(tmp_path / "g.yaml", {"guides.box.lead_weight": "3", "guides.phrase.weight": "0.5"})
    assert (cfg.guides.box.weight, cfg.guides.box.heads, cfg.guides.box.lead_weight) == (1.0, 2, 3.0)
    assert cfg.guides.box.layers == [1, 2] and cfg.guides.phrase.layers == [0, 1] and cfg.guides.phrase.weight == 0.5
    assert [name for name, _ in cfg.guides.active()] == ["box", "phrase"]
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    with pytest.raises(ValueError, match=r"unknown config field 'guides.box.wieght'; did you mean guides.box.weight"):
        load_config(None, {"guides.box.wieght": 1})
    with pytest.raises(ValueError, match=r"guides.box.lead_weight must be > 0"):
        load_config(None, {"guides": {"box": {"lead_weight": 0}}})


def test_cli_names_bad_options_and_bad_paths(world, tmp_path, capsys):
    assert train_main(["stage2", "--data", str(world), "--max-stesp", "2"]) == 2
    assert "did you mean --max-steps" in capsys.readouterr().err
    assert train_main(["stage1", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["stage2", "--data", str(world), "--init", str(world), "--out", str(tmp_path / "o")]) == 2
    assert "not a sphinx_vi checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "captions").mkdir(parents=True)
    (empty / "captions" / "real.jsonl").write_text("")
    assert train_main(["stage1", "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no usable samples" in capsys.readouterr().err


def test_lr_scaling_and_schedule():
    cfg = TrainConfig(lr=1e-3, reference_batch=32, batch_size=8, grad_accum=2, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert scaled_lr(cfg, world_size=4) == (pytest.approx(2e-3), 64)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55) and lr_factor(110, cfg) == pytest.approx(0.1)


def test_trainable_parts_by_name(tiny_config):
    from sphinx_vi import SphinxViForConditionalGeneration

    def trainable(names, **kw):
        torch.manual_seed(0)
        m = SphinxViForConditionalGeneration(tiny_config)
        apply_trainable(m, TrainConfig(trainable=names, **kw))
        return m, {n.split(".")[0] + "." + n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad}

    _, parts = trainable(["projector"])
    assert parts == {"vision.projector", "vision.qformer_projector", "vision.image_begin", "vision.image_end", "vision.qformer"}
    m, parts = trainable(["lm_head"])
    assert parts == {"language_model.lm_head"}
    m, parts = trainable(["vision"])
    assert {"vision.encoders", "vision.qformer"} == parts and m.vision.encoders["clip_vit"].trainable
    m, _ = trainable(["projector", "llm_lora"], lora_rank=4)
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all("language_model" in n for n in lora)
    assert m.language_model.peft_config["default"].lora_alpha == 8  # alpha = 2·rank
    with pytest.raises(ValueError, match="'llm' .* or 'llm_lora'"):
        TrainConfig(trainable=["llm", "llm_lora"])


def test_qlora_trains_on_the_cpu_and_saves_a_plain_checkpoint(world, tmp_path):
    """bitsandbytes' CPU kernels run QLoRA here: NF4 base, LoRA adapters learn, and the saved model is a plain one
    whose weights are the dequantized base with the adapters folded in."""
    q = qlora_quantization_config()
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    final = stage2(_cfg(world, tmp_path / "qlora", trainable=["projector", "llm_lora"], qlora=True, lora_rank=4, max_steps=2,
                        lora_targets=["q_proj", "v_proj"]))
    rows = read_metrics(tmp_path / "qlora" / "metrics.jsonl")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    keys = load_file(str(final / "model.safetensors")).keys()
    assert not any("lora_" in k or "absmax" in k or "quant" in k for k in keys)  # no adapter, no 4-bit state
    assert "quantization_config" not in json.loads((final / "config.json").read_text())["text_config"]
    vi = SphinxVi.from_pretrained(final)  # loads strictly: every weight plain and present
    assert type(vi.model.language_model.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert isinstance(vi.chat(world / "images" / "000001.png", "Có gì?", max_new_tokens=2), str)


def test_folding_lora_into_a_dequantized_base_keeps_the_function():
    from peft import LoraConfig, get_peft_model

    from sphinx_vi.factory import build_from_preset
    from sphinx_vi.quantization import dequantize_language_model, quantize_language_model

    model, _ = build_from_preset("tiny")
    quantize_language_model(model, "nf4")
    lm = get_peft_model(model.language_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.randint(5, 100, (1, 12))
    with torch.no_grad():
        before = lm(input_ids=ids).logits.float()
        base = lm.get_base_model()
        assert dequantize_language_model(base) == 2 * 7  # 2 layers × (q, k, v, o, gate, up, down)
        after = base(input_ids=ids).logits.float()
    torch.testing.assert_close(after, before, rtol=0.05, atol=0.05)  # bnb computes in bf16, the folded model in fp32


def test_stage1_twice_merge_then_stage2(world, tmp_path):
    real = stage1(_cfg(world, tmp_path / "real", captions="real", seed=1))
    synth = stage1(_cfg(world, tmp_path / "synth", captions="synthetic", seed=2))
    rows = read_metrics(tmp_path / "real" / "metrics.jsonl")
    assert {"loss_text", "loss_caption"} <= set(rows[-1]) and len(rows) == 4
    assert (tmp_path / "real" / "loss.png").stat().st_size > 1000
    lin_a, lin_b = (json.loads((d / "lineage.json").read_text()) for d in (real, synth))
    assert lin_a["base"] == lin_b["base"]  # --seed changes data order only, not the init

    merged = merge(real, synth, 0.3, tmp_path / "merged")
    a, b, m = (load_file(str(d / "model.safetensors")) for d in (real, synth, merged))
    for k in a:
        if k.startswith("language_model."):
            torch.testing.assert_close(m[k], 0.3 * a[k] + 0.7 * b[k], rtol=0, atol=1e-7)
    assert not torch.equal(a["language_model.model.layers.0.mlp.up_proj.weight"], b["language_model.model.layers.0.mlp.up_proj.weight"])

    other = stage1(_cfg(world, tmp_path / "other", init_seed=7, max_steps=1))
    with pytest.raises(LineageMismatchError, match="different base weights"):
        merge(real, other, 0.5, tmp_path / "bad")

    final = stage2(_cfg(world, tmp_path / "s2", init=str(merged), max_steps=3))
    vi = SphinxVi.from_pretrained(final)
    assert isinstance(vi.chat(world / "images" / "000001.png", "Có gì?", max_new_tokens=3), str)
    assert json.loads((final / "lineage.json").read_text())["base"] == lin_a["base"]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(world, tmp_path):
    straight = stage2(_cfg(world, tmp_path / "a", max_steps=6, save_every=1, seed=3))
    assert straight.exists()
    stage2(_cfg(world, tmp_path / "b", max_steps=6, save_every=1, seed=3), stop_after=3)
    assert not (tmp_path / "b" / "final").exists()
    stage2(_cfg(world, tmp_path / "b", max_steps=6, save_every=1, seed=3))
    la = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(la) == len(lb) == 6
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    wa, wb = (load_file(str(d / "final" / "model.safetensors")) for d in (tmp_path / "a", tmp_path / "b"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path, monkeypatch):
    from sphinx_vi.modeling import SphinxViForConditionalGeneration

    original = SphinxViForConditionalGeneration.label_loss_sum
    step2 = tmp_path / "nan" / "checkpoints" / "step-0000002"

    def poisoned(self, hidden, labels):  # every loss after step 2 was saved, whatever the streams per step
        total, n = original(self, hidden, labels)
        return (total * float("nan"), n) if step2.exists() else (total, n)

    monkeypatch.setattr(SphinxViForConditionalGeneration, "label_loss_sum", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*Last good checkpoint: .*step-0000002"):
        stage2(_cfg(world, tmp_path / "nan", max_steps=6, save_every=1))
    names = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())
    assert names == ["step-0000001", "step-0000002"]


@pytest.fixture(scope="module")
def one_process_run(world, tmp_path_factory):
    """The reference the multi-process engines must reproduce: one process, global batch 8 in two micro-batches."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    distributed.one_process(world, out)
    return out


@pytest.mark.parametrize("engine", distributed.ENGINES, ids=[e.name for e in distributed.ENGINES])
def test_two_cpu_processes_match_one_process_on_every_engine(engine, world, one_process_run, tmp_path):
    """DDP (torchrun) and the GPU launch configs for FSDP2 and DeepSpeed ZeRO-2/3, unchanged but for the process
    count: same losses and weights as one process (gradient accumulation included); sharded checkpoints resume exactly
    and consolidate to the final model."""
    row = distributed.measure(engine, world, one_process_run, tmp_path)
    assert row["reported"]  # the run says it ran on that engine
    assert row["loss_rel"] < 1e-4 and row["box_attention_rel"] < 1e-4 and row["weights_abs"] < 1e-5, row
    if engine.shard_files is None:
        return
    assert row["shards_per_checkpoint"] == 2  # one shard per process, no full copy
    assert row["resume"]["loss_rel"] < 1e-5 and row["resume"]["weights_abs"] < 1e-6, row
    assert row["consolidated_abs"] == 0.0
    cons = tmp_path / "consolidated"
    assert json.loads((cons / "lineage.json").read_text())["steps"] == distributed.STEPS
    assert isinstance(SphinxVi.from_pretrained(cons).chat(world / "images" / "000001.png", "Có gì?", max_new_tokens=2), str)


def test_consolidate_names_what_it_found_in_a_directory_without_shards(world, tmp_path, capsys):
    from sphinx_vi.train.__main__ import main

    assert main(["consolidate", str(world), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no sharded model" in err and "images" in err
    assert not (tmp_path / "x").exists()


def test_lora_run_saves_a_plain_merged_checkpoint(world, tmp_path):
    final = stage2(_cfg(world, tmp_path / "lora", trainable=["projector", "llm_lora"], lora_rank=4, max_steps=2))
    langs = json.loads((final / "lineage.json").read_text())["languages"]  # what it was trained on, for the studio header
    assert set(langs) <= {"vi", "en", "unknown"} and langs.get("vi", 0) > 0
    keys = load_file(str(final / "model.safetensors")).keys()
    assert not any("lora_" in k for k in keys) and any(k.startswith("language_model.") for k in keys)
    assert isinstance(SphinxVi.from_pretrained(final).chat(world / "images" / "000001.png", "Có gì?", max_new_tokens=2), str)


def test_stage2_with_box_attention_logs_the_guided_mass_and_saves_a_stock_model(world, tmp_path):
    import json

    guides = {"box": {"weight": 1.0, "layers": [-1], "heads": 2}, "phrase": {"weight": 0.5, "layers": [0]}}
    final = stage2(_cfg(world, tmp_path / "box", guides=guides, mixture={"rec": 1.0, "reg": 1.0}, max_steps=3))
    rows = [json.loads(x) for x in (tmp_path / "box" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["box_attention"] > 0 for r in rows)  # −log mass on the box, logged every step
    phrase = [r["phrase_attention"] for r in rows if "phrase_attention" in r]  # a step of REG answers only has no phrase term
    assert phrase and all(v > 0 for v in phrase)  # −mean log attention on the REC expression
    vi = SphinxVi.from_pretrained(final)
    for layer in vi.model.language_model.get_decoder().layers:
        assert not layer.self_attn._forward_pre_hooks  # no hook is saved
    for name in ("box", "phrase"):
        with pytest.raises(ValueError, match=f"guides.{name} .*gradient_checkpointing"):
            _cfg(world, tmp_path / "x", **{f"guides.{name}.weight": 1.0}, gradient_checkpointing=True)
        with pytest.raises(ValueError, match="loss weight"):
            _cfg(world, tmp_path / "x", guides={name: {"weight": -1.0}})


def test_a_one_process_fsdp_launch_on_the_cpu_is_refused_not_run_unsharded(monkeypatch):
    """accelerate gives a one-process launch no FSDP: it must not train silently as a plain run."""
    from accelerate import Accelerator

    from sphinx_vi.train.engines import EngineUnavailableError, check_engine, enable_cpu_fsdp2

    accelerator = Accelerator(cpu=True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not enable_cpu_fsdp2(accelerator)  # one process: no process group to shard over
    with pytest.raises(EngineUnavailableError, match="asks for FSDP, but accelerate runs NO here"):
        check_engine(accelerator)


def test_a_deepspeed_launch_is_refused_where_accelerate_did_not_start_deepspeed(monkeypatch):
    from accelerate import Accelerator

    from sphinx_vi.train.engines import EngineUnavailableError, check_engine

    accelerator = Accelerator(cpu=True)
    check_engine(accelerator)  # nothing asked: fine
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(EngineUnavailableError, match="asks for DeepSpeed"):
        check_engine(accelerator)


def test_a_text_only_batch_while_only_the_projector_trains_is_a_zero_gradient_step_not_a_crash(world, tmp_path):
    """Text-only samples never reach the projector: such a step used to stop stage 2 with "does not require grad"
    (the claims harness's GIT-LLM projector-only variant). It is now a step with a zero gradient."""
    final = stage2(_cfg(world, tmp_path / "proj", mixture={"text": 1.0}, trainable=["projector"], text_loss_weight=0.0,
                        max_steps=2))
    rows = read_metrics(tmp_path / "proj" / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r][-1] == 2 and all(r["grad_norm"] == 0.0 for r in rows if "grad_norm" in r)
    assert (final / "model.safetensors").exists()
