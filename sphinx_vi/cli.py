"""Command line: `python -m sphinx_vi chat|detect --model NAME_OR_PATH --image IMG "prompt"`, `info`, `convert`, `serve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .convert import FORMATS
from .images import ImageError
from .processing import PromptTooLongError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("chat", "answer a question about an image"), ("detect", "detect objects, print JSON")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("prompt", help="question (chat) or object category (detect), Vietnamese or English")
        s.add_argument("--model", default="tiny", help="checkpoint directory or preset name (default: tiny)")
        s.add_argument("--image", required=True, help="image file")
        s.add_argument("--max-new-tokens", type=int, default=128)
        s.add_argument("--seed", type=int, default=0, help="init seed for presets")
    info = sub.add_parser("info", help="parameters and visual tokens of a preset (built on the meta device)")
    info.add_argument("--preset", default="sphinx-vi-1k")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    conv = sub.add_parser("convert", help="a released checkpoint → a sphinx_vi checkpoint directory")
    conv.add_argument("src", help="the source checkpoint directory")
    conv.add_argument("--from", dest="source_format", required=True, choices=list(FORMATS))
    conv.add_argument("--out", required=True, help="the sphinx_vi checkpoint directory to write")
    conv.add_argument("--vision-tower", default=None, help="local copy of the vision tower's repository (original LLaVA layout)")
    conv.add_argument("--tokenizer", default=None, help="tokenizer directory (default: SRC)")
    conv.add_argument("--template", default=None, help="chat template name (llava-hf without its own template)")
    conv.add_argument("--preset", default="sphinx-1k", help="sphinx: the checkpoint's architecture (sphinx-1k, sphinx-v2-1k, sphinx)")
    srv = sub.add_parser("serve", help="an OpenAI-compatible server (/v1/chat/completions with boxes, /v1/models, /health)")
    srv.add_argument("--model", default="tiny-shapes", help="checkpoint directory, embedded model or preset (default: tiny-shapes)")
    srv.add_argument("--served-model-name", default=None, help="the name clients send as `model` (default: --model)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` (also read from SPHINX_VI_API_KEY)")
    srv.add_argument("--image-root", type=Path, default=None, help="serve local image paths from inside this directory")
    srv.add_argument("--max-request-mb", type=float, default=32.0, help="largest request body (default: 32 MB)")
    srv.add_argument("--max-image-pixels", type=int, default=25_000_000, help="largest image (default: 25 MP)")
    srv.add_argument("--max-prompt-chars", type=int, default=262_144, help="longest text of a request (default: 256 Ki characters)")
    srv.add_argument("--max-new-tokens", type=int, default=256, help="answer length when a request names none")
    srv.add_argument("--max-beams", type=int, default=4, help="most beams a request may ask for (default: 4)")
    srv.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    srv.add_argument("--quantization", default=None, choices=["nf4", "int8"])
    return p


def _serve(args: argparse.Namespace) -> int:
    import os

    from .serve import ServeConfig, serve

    serve(ServeConfig(model=args.model, served_model_name=args.served_model_name, host=args.host, port=args.port,
                      api_key=args.api_key or os.environ.get("SPHINX_VI_API_KEY"), image_root=args.image_root,
                      max_request_bytes=int(args.max_request_mb * 1024 * 1024), max_image_pixels=args.max_image_pixels,
                      max_prompt_chars=args.max_prompt_chars,
                      max_new_tokens=args.max_new_tokens, max_beams=args.max_beams, dtype=args.dtype, quantization=args.quantization))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from .summary import format_summary, summarize

        info = summarize(args.preset)
        print(json.dumps(info, indent=2) if args.json else format_summary(info))
        return 0
    if args.command == "convert":
        from .convert import convert

        try:
            out = convert(args.source_format, args.src, args.out, vision_tower=args.vision_tower, tokenizer=args.tokenizer,
                          chat_template=args.template, preset=args.preset)
        except (ValueError, KeyError, OSError) as err:  # FileNotFoundError and the checkpoint errors included
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"sphinx_vi checkpoint: {out}")
        return 0
    if args.command == "serve":
        try:
            return _serve(args)
        except (ValueError, OSError) as err:  # a model that cannot be loaded, a port in use
            print(f"error: {err}", file=sys.stderr)
            return 2
    from .api import SphinxVi  # heavy imports after argument errors

    try:
        vi = SphinxVi.load(args.model, seed=args.seed)
        if args.command == "chat":
            print(vi.chat(args.image, args.prompt, max_new_tokens=args.max_new_tokens))
        else:
            answer = vi.answer(args.image, "detect", category=args.prompt, max_new_tokens=args.max_new_tokens)
            report = {
                "query": args.prompt,
                "image": args.image,
                "image_size": list(answer.image_size),
                "detections": [d.to_dict() for d in answer.detections],
                "answer": answer.text,
                "warnings": answer.warnings,
            }
            print(json.dumps(report, ensure_ascii=False, indent=2))
    except (ImageError, PromptTooLongError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
