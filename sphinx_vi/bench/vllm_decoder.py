"""vLLM's side of the engine study, run with the vLLM environment's Python (it imports vLLM only, not sphinx_vi).

`python sphinx_vi/bench/vllm_decoder.py DECODER_DIR PROMPT.json` greedy-decodes the prompt ids in
PROMPT.json ({"ids": [...], "copies": N, "new_tokens": T, "dtype": "bfloat16"}) N times with vLLM's
offline engine: all N at once (continuous batching) and one after another; prints one JSON line after "RESULT "
with the load time, both timings and the first copy's new token ids.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU
    decoder, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t = time.perf_counter()
    llm = LLM(model=decoder, dtype=spec["dtype"], max_model_len=spec.get("max_model_len", 1024), enforce_eager=True, seed=0)
    load_s = time.perf_counter() - t
    params = SamplingParams(max_tokens=spec["new_tokens"], min_tokens=spec["new_tokens"], temperature=0.0, ignore_eos=True)
    prompt = TokensPrompt(prompt_token_ids=spec["ids"])
    llm.generate([prompt], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate([prompt] * spec["copies"], params, use_tqdm=False)
    batched_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(spec["copies"]):
        llm.generate([prompt], params, use_tqdm=False)
    sequential_s = time.perf_counter() - t
    print("RESULT " + json.dumps({"load_s": load_s, "batched_s": batched_s, "sequential_s": sequential_s,
                      "new_ids": list(outs[0].outputs[0].token_ids), "vllm_version": __import__("vllm").__version__}))


if __name__ == "__main__":  # vLLM starts its engine core in a spawned process, which re-imports this file
    main()
