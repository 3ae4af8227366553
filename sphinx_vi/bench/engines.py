"""Engine study: the decoder of a sphinx_vi checkpoint on transformers and on vLLM, equal work:
`python -m sphinx_vi.bench.engines --vllm-python .venv-vllm/bin/python --out FILE.json`.

transformers serve runs a vision-language model's requests one after another on its inference
thread; vLLM batches requests continuously. The study gives both the same decoder (the
checkpoint's language model exported as a plain transformers checkpoint), the same prompt ids (a
real request's, visual-token positions included) and the same greedy answer length, `--copies`
times: transformers one request after another (what transformers serve does for a VLM) and all
at once in one padded batch; vLLM all at once (its scheduler) and one after another. The new
token ids of the first copy are compared across engines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import command_parser, write_json

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "world_shapes_1.png"


def export_decoder(model: str, out: Path) -> tuple[Any, list[int]]:
    """The checkpoint's language model as a plain transformers checkpoint in `out` (with the tokenizer), and the
    prompt ids of a detect request on the example image."""
    from ..factory import load_model
    from ..generation import build_messages
    from ..prompts import task_prompt

    loaded = load_model(model)
    lm = loaded.model.language_model
    lm.save_pretrained(out)
    loaded.processor.tokenizer.save_pretrained(out)
    text = loaded.processor.apply_chat_template(build_messages(task_prompt("detect", "vi", category="hình tròn")))
    ids = loaded.processor(text, [EXAMPLE]).input_ids[0].tolist()
    return lm, ids


def time_transformers(lm: Any, ids: list[int], copies: int, new_tokens: int, dtype: torch.dtype) -> dict[str, Any]:
    lm = lm.to(dtype).eval()
    prompt = torch.tensor([ids])
    opts = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        first = lm.generate(prompt, **opts)[0, len(ids):].tolist()  # warm-up, and the reference ids
        t = time.perf_counter()
        for _ in range(copies):
            lm.generate(prompt, **opts)
        sequential_s = time.perf_counter() - t
        t = time.perf_counter()
        lm.generate(prompt.expand(copies, -1), attention_mask=torch.ones(copies, len(ids), dtype=torch.long), **opts)
        batched_s = time.perf_counter() - t
    return {"sequential_s": sequential_s, "batched_s": batched_s, "new_ids": first}


def bench(model: str, vllm_python: str, copies: int, new_tokens: int, dtype: str) -> dict[str, Any]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        decoder = Path(tmp) / "decoder"
        lm, ids = export_decoder(model, decoder)
        hf = time_transformers(lm, ids, copies, new_tokens, getattr(torch, dtype))
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"ids": ids, "copies": copies, "new_tokens": new_tokens, "dtype": dtype}))
        proc = subprocess.run([vllm_python, str(Path(__file__).with_name("vllm_decoder.py")), str(decoder), str(spec)],
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"vLLM run failed:\n{proc.stderr[-4000:]}")
        vl = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    tokens = copies * new_tokens
    rows = {"transformers, one after another (transformers serve for a VLM)": hf["sequential_s"],
            "transformers, one padded batch": hf["batched_s"],
            "vLLM, one after another": vl["sequential_s"],
            "vLLM, continuous batching": vl["batched_s"]}
    base = hf["sequential_s"]
    same = sum(a == b for a, b in zip(hf["new_ids"], vl["new_ids"]))
    return {"model": model, "prompt_tokens": len(ids), "new_tokens": new_tokens, "copies": copies, "dtype": dtype,
            "vllm_version": vl["vllm_version"], "vllm_load_s": vl["load_s"],
            "rows": [{"engine": k, "seconds": s, "tokens_per_s": tokens / s, "vs_transformers_serve": base / s} for k, s in rows.items()],
            "first_answer_ids_equal": f"{same}/{new_tokens}"}


def format_table(r: dict[str, Any]) -> str:
    out = [f"decoder of {r['model']}, {r['copies']} requests x {r['new_tokens']} greedy tokens after {r['prompt_tokens']} prompt tokens, "
           f"{r['dtype']}, vLLM {r['vllm_version']}",
           f"{'engine':<66}{'s':>8}{'tok/s':>9}{'x':>7}"]
    out += [f"{row['engine']:<66}{row['seconds']:>8.2f}{row['tokens_per_s']:>9.0f}{row['vs_transformers_serve']:>7.2f}" for row in r["rows"]]
    out.append(f"first answer's new ids equal across engines: {r['first_answer_ids_equal']}; vLLM load {r['vllm_load_s']:.1f} s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.engines", __doc__)
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--vllm-python", default=".venv-vllm/bin/python", help="the Python of an environment with vLLM (make vllm-venv)")
    p.add_argument("--copies", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--require-equal", action="store_true", help="exit 1 unless vLLM's ids equal transformers' (a check, for fp32)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = bench(args.model, args.vllm_python, args.copies, args.new_tokens, args.dtype)
    print(format_table(result))
    write_json(args.out, result)
    equal = result["first_answer_ids_equal"] == f"{args.new_tokens}/{args.new_tokens}"
    return 1 if args.require_equal and not equal else 0


if __name__ == "__main__":
    sys.exit(main())
