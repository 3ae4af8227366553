"""`python -m apps.studio [--model NAME_OR_PATH] [--detector DIR] [--sam PATH] [--sam-type vit_h|vit_l|vit_b] [--inpaint DIR]
[--host 127.0.0.1] [--port N]` — every model is a local path first; without SAM / Stable Diffusion
weights, classical stand-ins run and the UI says so."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.studio", description=__doc__)
    p.add_argument("--model", default="tiny-shapes", help="checkpoint directory, embedded model or preset (default: tiny-shapes)")
    p.add_argument("--detector", default=None,
                   help="another grounding model's local transformers checkpoint for Detect (Kosmos-2, Florence-2, Qwen2.5-VL, InternVL); chat on --model")
    p.add_argument("--sam", default=None, help="Segment Anything checkpoint file (.pth); default: GrabCut stand-in")
    p.add_argument("--sam-type", default="vit_h", help="vit_h | vit_l | vit_b")
    p.add_argument("--inpaint", default=None, help="local diffusers inpainting pipeline directory; default: OpenCV Telea")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: local only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="public Gradio share link (off unless asked)")
    p.add_argument("--ui-lang", choices=["vi", "en"], default="vi")
    p.add_argument("--max-upload-mb", type=int, default=20)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "auto"], default="float32",
                   help="the model's dtype; auto = bf16 where the hardware computes it")
    args = p.parse_args(argv)
    from .core import Studio
    from .ui import launch

    try:
        studio = Studio(args.model, args.sam, args.sam_type, args.inpaint, args.ui_lang, dtype=args.dtype, detector=args.detector)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(studio.backends().replace("**", "").replace("`", ""))
    launch(studio, args.host, args.port, args.share, args.max_upload_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
