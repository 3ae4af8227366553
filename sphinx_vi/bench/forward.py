"""Forward-pass time of a preset on this machine: `python -m sphinx_vi.bench.forward --out FILE.json`.

Times (median of `--repeats` after warm-up) one chat prompt with one image through the whole
model, and, as the peer measured in the same run, the bare language model on a text-only
sequence of the same length; the ratio is the cost of the visual front end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..factory import build_from_preset
from ..generation import Generator
from . import command_parser, machine, median_seconds, write_json


def run(preset: str = "tiny", repeats: int = 20, threads: int = 2, batch: int = 1) -> dict:
    torch.set_num_threads(threads)
    gen = Generator(*build_from_preset(preset))
    model = gen.model
    image = torch.randint(0, 255, (240, 320, 3), dtype=torch.uint8).numpy()
    text = gen.processor.apply_chat_template([{"role": "user", "content": "<image>\nCó gì trong ảnh?"}])
    inputs = gen.processor([text] * batch, [image] * batch)
    text_ids = torch.randint(5, model.config.text_config.vocab_size, inputs["input_ids"].shape)
    with torch.inference_mode():
        full, full_sd = median_seconds(lambda: model(**inputs), repeats)
        lm, lm_sd = median_seconds(lambda: model.language_model(input_ids=text_ids), repeats)
        vis, vis_sd = median_seconds(lambda: model.vision(inputs["pixel_values"]), repeats)
        prep, prep_sd = median_seconds(lambda: gen.processor([text] * batch, [image] * batch), repeats)
    return {
        "preset": preset,
        "batch": batch,
        "sequence_length": int(inputs["input_ids"].shape[1]),
        "visual_tokens_per_image": model.config.layout.tokens_per_image,
        "threads": threads,
        "machine": machine(),
        "forward_s": full,
        "forward_sd_s": full_sd,
        "vision_s": vis,
        "vision_sd_s": vis_sd,
        "text_only_lm_s": lm,
        "text_only_lm_sd_s": lm_sd,
        "processor_s": prep,
        "processor_sd_s": prep_sd,
        "forward_vs_text_only_lm": full / lm,
    }


def main() -> None:
    p = command_parser("python -m sphinx_vi.bench.forward", __doc__)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    r = run(args.preset, args.repeats, args.threads, args.batch)
    print(f"preset {r['preset']}, batch {r['batch']}, {r['sequence_length']} tokens ({r['visual_tokens_per_image']} visual), {r['threads']} threads")
    print(f"{'step':<28}{'median ms':>12}{'sd ms':>10}")
    steps = (("processor", "processor (image → views)"), ("vision", "mixed vision encoder"), ("forward", "full forward"),
             ("text_only_lm", "LLM alone, same length"))
    for key, label in steps:
        print(f"{label:<28}{1e3 * r[key + '_s']:>12.2f}{1e3 * r[key + '_sd_s']:>10.2f}")
    print(f"full forward / LLM alone: {r['forward_vs_text_only_lm']:.2f}×")
    write_json(args.out, r)


if __name__ == "__main__":
    main()
