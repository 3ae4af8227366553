"""`python -m sphinx_vi.eval --model DIR --data DIR --out report.json [--limit N] [--gallery rec.png] [--no-box-grammar] [--record]`"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .gallery import draw_rec_gallery
from .record import record_evaluation
from .runner import TASKS, evaluate, format_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.eval", description=__doc__)
    p.add_argument("--model", required=True, help="checkpoint directory or preset name")
    p.add_argument("--data", required=True, help="held-out data directory (synthetic world layout)")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    p.add_argument("--limit", type=int, default=None, help="samples per task")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--gallery", type=Path, default=None, help="PNG: the first 16 REC answers drawn on their images")
    p.add_argument("--no-box-grammar", action="store_true",
                   help="decode without the box-grammar constraint (to measure what it adds)")
    p.add_argument("--record", action="store_true",
                   help="also write the scores into the checkpoint directory (evaluation.json; the studio header shows them)")
    args = p.parse_args(argv)
    if args.record and not Path(args.model).is_dir():
        print(f"error: --record writes into a checkpoint directory; {args.model!r} is not one", file=sys.stderr)
        return 2
    from ..factory import load_model
    from ..generation import Generator

    try:
        gen = Generator(*load_model(args.model))
        report = evaluate(gen, args.data, args.limit, args.tasks, args.batch_size, constrain_boxes=not args.no_box_grammar)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2, ensure_ascii=False))
        print(f"wrote {args.out}")
    if args.record:
        print(f"wrote {record_evaluation(Path(args.model), report, args.data, args.limit)}")
    if args.gallery and report.get("_rec_results"):
        print(f"wrote {draw_rec_gallery(report['_rec_results'][:16], args.gallery)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
