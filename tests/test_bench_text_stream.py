"""The paragraph-stream benchmark runs end to end at toy size, and its timing reads the metric lines it should."""

import json

from sphinx_vi.bench.text_stream import main, seconds_per_step


def test_seconds_per_step_leaves_out_the_first_steps(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "elapsed_s": 9.0}, {"step": 20, "elapsed_s": 12.0}, {"event": "checkpoint"}, {"step": 40, "elapsed_s": 18.0}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert seconds_per_step(metrics, skip=20) == 0.3  # (18 - 12) / (40 - 20): the slow first ten steps are not counted


def test_the_text_stream_benchmark_times_the_stream_off_and_on(tmp_path, capsys):
    out = tmp_path / "text_stream.json"
    assert main(["--images", "40", "--steps", "20", "--skip", "10", "--text-batch-sizes", "0", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["text_batch_size"] for r in rows] == [0, 2] and rows[0]["vs_off"] == 1.0
    assert all(r["seconds_per_step"] > 0 for r in rows) and rows[1]["vs_off"] == rows[1]["seconds_per_step"] / rows[0]["seconds_per_step"]
    assert "paragraphs/step" in capsys.readouterr().out
