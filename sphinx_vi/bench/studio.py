"""Per-step latency of the studio chain on this machine: `python -m sphinx_vi.bench.studio --out FILE.json`.

detect (the sphinx_vi model), segment (GrabCut stand-in; a tiny random SAM built from
segment_anything's classes), inpaint (Telea stand-in; a tiny random diffusers inpainting pipeline);
and the click-to-segment workflow on a real photo (scikit-image's coffee, 600×400): click → mask,
box → mask (SAM with a new image, so its embedding included, and on the kept embedding), remove,
replace.
The tiny SAM / diffusers models time the plumbing, not real weights: real SAM ViT-H and SD
inpainting cost far more on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..api import SphinxVi
from ..tools import EditSettings, GrabCutSegmenter, MaskPrompt, SamSegmenter, TeleaInpainter, union_mask
from ..tools.inpaint import DiffusersInpainter
from ..tools.tiny_models import build_tiny_sam, save_tiny_inpaint_pipeline
from . import command_parser, machine, median_seconds, write_json


def _median(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1)[0]


def run(model: str, image: Path, query: str, repeats: int) -> dict:
    torch.set_num_threads(2)
    vi = SphinxVi.load(model)
    img = vi.processor.load(image)
    box = (img.width * 0.25, img.height * 0.25, img.width * 0.6, img.height * 0.7)
    result = {"model": model, "image_size": list(img.size), "threads": 2, "machine": machine()}
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
        result.update(clicks(grab, sam, sd, repeats))
    return result


def clicks(grab: GrabCutSegmenter, sam: SamSegmenter, sd: DiffusersInpainter, repeats: int) -> dict:
    """The user's own prompts on a real photo, per backend."""
    from PIL import Image
    from skimage import data as skdata

    photo = Image.fromarray(skdata.coffee())
    point, box = MaskPrompt(((310.0, 170.0),), (1,)), MaskPrompt(box=(170.0, 40.0, 460.0, 300.0))
    out: dict = {"photo_size": list(photo.size)}
    for name, prompt in (("click", point), ("box", box)):
        out[f"{name}_to_mask_grabcut_s"] = _median(lambda p=prompt: grab.segment_prompt(photo, p), repeats)

        def fresh(p=prompt) -> None:
            sam._embedded = None  # a new image: its embedding is part of the first click
            sam.segment_prompt(photo, p)

        out[f"{name}_to_mask_tiny_sam_new_image_s"] = _median(fresh, repeats)
        out[f"{name}_to_mask_tiny_sam_kept_embedding_s"] = _median(lambda p=prompt: sam.segment_prompt(photo, p), repeats)
    mask = union_mask(grab.segment_prompt(photo, point).masks, photo.size, 8)
    out["remove_telea_s"] = _median(lambda: TeleaInpainter().inpaint(photo, mask, None, EditSettings()), repeats)
    settings = EditSettings(steps=10, max_side=256)
    out["remove_tiny_diffusers_10_steps_s"] = _median(lambda: sd.inpaint(photo, mask, None, settings), repeats)
    out["replace_tiny_diffusers_10_steps_s"] = _median(lambda: sd.inpaint(photo, mask, "a red apple", settings), repeats)
    return out


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
