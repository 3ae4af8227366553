"""`python -m sphinx_vi.train stage1 | stage2 | merge | consolidate` — see `--help` of each (stage 0: `python -m sphinx_vi.experiments.towers`)."""

from __future__ import annotations

import argparse
import sys

from .config import add_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.train", description=__doc__, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    for stage, help_text in (("stage1", "alignment on captions + text-only data"), ("stage2", "instruction tuning on the task mixture")):
        s = sub.add_parser(stage, help=help_text, allow_abbrev=False)
        s.add_argument("--config", default=None, help="YAML file (train/configs/*.yaml); flags override it")
        add_arguments(s)
    m = sub.add_parser("merge", help="average the LLMs of two stage-1 models: beta·real + (1-beta)·synthetic")
    m.add_argument("--real", required=True)
    m.add_argument("--synthetic", required=True)
    m.add_argument("--beta", type=float, default=0.5)
    m.add_argument("--out", required=True)
    m.add_argument("--data", default=None, help="accepted for symmetry with the stages; unused")
    m.add_argument("--max-steps", default=None, help="accepted for symmetry; unused")
    m.add_argument("--seed", default=None, help="accepted for symmetry; unused")
    c = sub.add_parser("consolidate", help="a sharded (FSDP2) training checkpoint → a normal checkpoint directory")
    c.add_argument("checkpoint", help="RUN/checkpoints/step-NNNNNNN")
    c.add_argument("--out", required=True)
    args, unknown = p.parse_known_args(argv)
    if unknown:
        import difflib

        from .config import FIELDS, flag

        flags = [flag(name) for name in FIELDS]
        for option in unknown:
            if option.startswith("--"):
                near = difflib.get_close_matches(option.split("=")[0], flags, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                print(f"error: unknown option {option}{hint}", file=sys.stderr)
                return 2
        p.error(f"unrecognized arguments: {' '.join(unknown)}")

    from ..data import TooManyBadRowsError
    from .consolidate import NotAShardedCheckpointError, consolidate
    from .merge import LineageMismatchError, merge
    from .recipes import DataDirError, stage1, stage2

    try:
        if args.command == "merge":
            print(f"merged model: {merge(args.real, args.synthetic, args.beta, args.out)}")
            return 0
        if args.command == "consolidate":
            print(f"consolidated model: {consolidate(args.checkpoint, args.out)}")
            return 0
        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
        cfg = load_config(args.config, overrides, stage=args.command)
        (stage1 if cfg.stage == "stage1" else stage2)(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError, DataDirError, LineageMismatchError, TooManyBadRowsError,
            NotAShardedCheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
