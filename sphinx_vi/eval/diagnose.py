"""Are the visual tokens informative? `python -m sphinx_vi.eval.diagnose --model DIR --data DIR [--num N]`

Prints, for each tower and for the final visual tokens, the standard deviation across images
(what differs from image to image) next to the overall standard deviation. A ratio near zero
means the towers collapsed to image-independent features and the LLM cannot see the image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..api import SphinxVi


def feature_spread(vi: SphinxVi, images: list[Path]) -> dict[str, dict[str, float]]:
    """{part: {across_images, overall, ratio}} over the given images."""
    px = torch.stack([vi.processor.image_to_views(p)[0] for p in images])  # (N, V, 3, R, R)
    n, v = px.shape[:2]
    out: dict[str, dict[str, float]] = {}

    def spread(name: str, x: torch.Tensor) -> None:
        across = (x - x.mean(0, keepdim=True)).std().item()
        overall = x.std().item()
        out[name] = {"across_images": across, "overall": overall, "ratio": across / overall if overall else 0.0}

    with torch.no_grad():
        views = px.flatten(0, 1)
        for name, enc in vi.model.vision.encoders.items():
            grid = enc(views).grid
            spread(f"tower.{name}", grid.reshape(n, v, *grid.shape[1:]))
        spread("visual_tokens", vi.model.vision(px))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path, help="a directory with images/ (e.g. a synthetic world)")
    p.add_argument("--num", type=int, default=16)
    args = p.parse_args()
    vi = SphinxVi.load(args.model)
    images = sorted((args.data / "images").glob("*.png"))[: args.num]
    if len(images) < 2:
        raise SystemExit(f"error: need at least 2 images under {args.data / 'images'}")
    result = feature_spread(vi, images)
    print(f"{'part':<28}{'across images':>14}{'overall':>10}{'ratio':>8}")
    for k, r in result.items():
        print(f"{k:<28}{r['across_images']:>14.5f}{r['overall']:>10.4f}{r['ratio']:>8.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
