"""Data tools: `python -m sphinx_vi.data synth | inspect | preview`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .world.generate import ALL_TASKS, synthesize
from .world.shapes import WorldConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the synthetic world (deterministic from --seed)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--num", type=int, default=1000, help="number of images")
    s.add_argument("--seed", type=int, default=0, help="a held-out split is just another seed")
    s.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    s.add_argument("--size", type=int, default=WorldConfig.size, help="image side in pixels")
    s.add_argument("--min-objects", type=int, default=WorldConfig.min_objects)
    s.add_argument("--max-objects", type=int, default=WorldConfig.max_objects)
    s.add_argument("--min-scale", type=float, default=WorldConfig.min_scale)
    s.add_argument("--max-scale", type=float, default=WorldConfig.max_scale)
    s.add_argument("--clutter", type=int, default=WorldConfig.clutter)
    s.add_argument("--distractor-rate", type=float, default=WorldConfig.distractor_rate,
                   help="chance a new shape copies the colour or kind of an earlier one (0 = all distinct-ish)")
    i = sub.add_parser("inspect", help="load a data file and report loaded / skipped rows and why")
    i.add_argument("file", type=Path)
    i.add_argument("--image-root", type=Path, default=None)
    i.add_argument("--instances", type=Path, default=None, help="COCO instances for a refs file")
    i.add_argument("--max-bad-fraction", type=float, default=1.0, help="exit 1 above this fraction of bad rows")
    v = sub.add_parser("preview", help="draw a contact sheet of samples with boxes, skeletons and text")
    v.add_argument("dir", type=Path)
    v.add_argument("--out", required=True, type=Path)
    v.add_argument("--num", type=int, default=16)
    v.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        if args.command == "synth":
            cfg = WorldConfig(size=args.size, min_objects=args.min_objects, max_objects=args.max_objects,
                              min_scale=args.min_scale, max_scale=args.max_scale, clutter=args.clutter,
                              distractor_rate=args.distractor_rate)
            manifest = synthesize(args.out, args.num, args.seed, args.tasks, cfg)
            for name, n in manifest["files"].items():
                print(f"{n:>8}  {name}")
            print(f"wrote {args.num} images to {args.out}")
        elif args.command == "inspect":
            from .samples import TooManyBadRowsError
            from .sources import load_any

            result = load_any(args.file, args.image_root, args.instances)
            print(result.report.summary())
            tasks = Counter(s.task for s in result.samples)
            langs = Counter(s.lang or "-" for s in result.samples)
            print(f"samples: {len(result.samples)}  tasks: {dict(tasks)}  languages: {dict(langs)}")
            try:
                result.report.check(args.max_bad_fraction)
            except TooManyBadRowsError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
        else:
            from .preview import contact_sheet

            print(f"wrote {contact_sheet(args.dir, args.out, args.num, args.seed)}")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
