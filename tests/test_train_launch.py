"""run_stage: a stage from Python, in this process or data-parallel over several processes at the same global batch."""

import pytest
import torch
from safetensors.torch import load_file

from sphinx_vi.train.config import load_config
from sphinx_vi.train.launch import LAUNCH_CONFIG, LaunchError, per_process, run_stage
from sphinx_vi.train.metrics import read_metrics


@pytest.fixture(scope="module")
def world(train_world):
    return train_world


def _cfg(world, out, **kw):
    base = dict(stage="stage2", model="tiny", data=str(world), out=str(out), batch_size=4, text_batch_size=2, max_steps=3,
                warmup_steps=1, log_every=1, save_every=3, lr=1e-3, reference_batch=4, max_length=1024, seed=2,
                precision="fp32", mixture={"rec": 2.0, "detection": 1.0, "text": 1.0},
                guides={"box": {"weight": 0.5, "layers": [-1], "heads": 2}})
    base.update(kw)
    return load_config(None, base)


def test_batch_sizes_are_global_and_split_evenly_or_refused(world, tmp_path):
    cfg = _cfg(world, tmp_path / "x")
    shared = per_process(cfg, 2)
    assert (shared.batch_size, shared.text_batch_size, shared.lr, shared.reference_batch) == (2, 1, cfg.lr, cfg.reference_batch)
    with pytest.raises(ValueError, match="3 processes cannot share batch_size 4, text_batch_size 2 evenly"):
        per_process(cfg, 3)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_stage(cfg, processes=0)


def test_two_processes_train_what_one_process_trains(world, tmp_path):
    one = run_stage(_cfg(world, tmp_path / "one"), processes=1)
    two = run_stage(_cfg(world, tmp_path / "two"), processes=2)
    assert two == tmp_path / "two" / "final" and (tmp_path / "two" / LAUNCH_CONFIG).exists()
    la, lb = (read_metrics(d.parent / "metrics.jsonl") for d in (one, two))
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3]
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-4)
    assert la[-1]["samples_per_s"] > 0 and lb[-1]["samples_per_s"] > 0
    wa, wb = (load_file(str(d / "model.safetensors")) for d in (one, two))
    assert wa.keys() == wb.keys()
    for k in wa:
        # reduction order only: Adam's first steps move a weight by about lr = 1e-3, and the two sums of the same
        # gradients differ in their last bits, which Adam's normalisation can lift to ~2e-5 on a single weight
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)


def test_a_failed_launch_says_so_and_where_its_config_is(world, tmp_path):
    with pytest.raises(LaunchError, match=r"exited with \d+; its config: .*launch.yaml"):
        run_stage(_cfg(world, tmp_path / "bad", data=str(tmp_path / "no_such_world")), processes=2)
