"""The quantization benchmark runs end to end at toy size and writes its table's rows."""

import json

from sphinx_vi.bench.quant import main


def test_the_quantization_benchmark_writes_every_variant(tmp_path, capsys):
    out = tmp_path / "quant.json"
    assert main(["--heldout-images", "12", "--limit", "4", "--reps", "1", "--new-tokens", "4", "--variants", "fp32", "nf4",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "nf4"] and all(r["rec_n"] == 4 for r in rows)
    assert rows[1]["llm_weights_mb"] < rows[0]["llm_weights_mb"] and all(r["decode_tokens_per_s"] > 0 for r in rows)
    assert "REC Acc@0.5" in capsys.readouterr().out
