"""Per-step latency of the studio chain on this machine: `python -m sphinx_vi.bench.studio --out FILE.json`.

detect (the sphinx_vi model), segment (GrabCut stand-in; a tiny random SAM built from
segment_anything's classes), inpaint (Telea stand-in; a tiny random diffusers inpainting pipeline).
The tiny SAM / diffusers models time the plumbing, not real weights: real SAM ViT-H and SD
inpainting cost far more on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..api import SphinxVi
from ..tools import EditSettings, GrabCutSegmenter, SamSegmenter, TeleaInpainter, union_mask
from ..tools.inpaint import DiffusersInpainter
from ..tools.tiny_models import build_tiny_sam, save_tiny_inpaint_pipeline
from . import command_parser, median_seconds, write_json


def _median(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1)[0]


def run(model: str, image: Path, query: str, repeats: int) -> dict:
    torch.set_num_threads(2)
    vi = SphinxVi.load(model)
    img = vi.processor.load(image)
    box = (img.width * 0.25, img.height * 0.25, img.width * 0.6, img.height * 0.7)
    result = {"model": model, "image_size": list(img.size), "threads": 2}
    result["detect_s"] = _median(lambda: vi.answer(img, "detect", "en", category=query), repeats)
    grab = GrabCutSegmenter()
    result["segment_grabcut_s"] = _median(lambda: grab.segment(img, [box]), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "sam_tiny.pth"
        torch.save(build_tiny_sam().state_dict(), ckpt)
        sam = SamSegmenter.load(ckpt, "sphinx_vi_tiny")

        def sam_fresh():
            sam._embedded = None  # include the image embedding
            sam.segment(img, [box, box])

        result["segment_tiny_sam_s"] = _median(sam_fresh, repeats)
        mask = union_mask(grab.segment(img, [box]), img.size, 8)
        result["inpaint_telea_s"] = _median(lambda: TeleaInpainter().inpaint(img, mask, None, EditSettings()), repeats)
        sd = DiffusersInpainter.load(save_tiny_inpaint_pipeline(Path(tmp)))
        settings = EditSettings(steps=10, max_side=256)
        result["inpaint_tiny_diffusers_10_steps_s"] = _median(lambda: sd.inpaint(img, mask, "a red apple", settings), repeats)
    return result


def main() -> None:
    p = command_parser("python -m sphinx_vi.bench.studio", __doc__)
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--image", type=Path, default=Path("sphinx_vi/assets/examples/shapes.png"))
    p.add_argument("--query", default="circles")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    r = run(args.model, args.image, args.query, args.repeats)
    print(f"{'step':<32}{'median ms':>12}")
    for k, v in r.items():
        if k.endswith("_s"):
            print(f"{k[:-2]:<32}{1e3 * v:>12.1f}")
    write_json(args.out, r)


if __name__ == "__main__":
    main()
