"""The serving benchmarks run (tiny, bounded) and report what they claim; the engine study's decoder export is exact."""

import json

import torch
from transformers import AutoModelForCausalLM

from sphinx_vi.bench import serve_load
from sphinx_vi.bench.engines import export_decoder, time_transformers
from sphinx_vi.factory import load_model


def test_the_load_benchmark_serves_every_request_and_refuses_every_hostile_one(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert serve_load.main(["--clients", "4", "--seconds", "2", "--max-tokens", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for phase in ("sequential", "concurrent"):
        assert result[phase]["requests_served"] == result[phase]["requests_sent"] > 0 and result[phase]["requests_lost"] == 0
    assert set(result["hostile"]) == {name for name, _ in serve_load.hostile_requests()}
    assert result["hostile_all_4xx"] and result["healthy_after"]
    assert "concurrent / sequential" in capsys.readouterr().out


def test_the_exported_decoder_is_the_checkpoint_s_language_model(tmp_path):
    _, ids = export_decoder("tiny-shapes", tmp_path / "decoder")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "decoder").eval()
    ours = load_model("tiny-shapes").model.language_model.eval()
    prompt = torch.tensor([ids])
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(prompt).logits, ours(prompt).logits, rtol=0, atol=0)
    timed = time_transformers(reloaded, ids, copies=2, new_tokens=4, dtype=torch.float32)
    assert len(timed["new_ids"]) == 4 and timed["sequential_s"] > 0 and timed["batched_s"] > 0
