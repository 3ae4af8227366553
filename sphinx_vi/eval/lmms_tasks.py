"""Local lmms-eval tasks from a held-out data directory: REC and VQA, scored as `python -m sphinx_vi.eval` scores them.

    python -m sphinx_vi.eval.lmms_tasks --data heldout --out lmms_tasks [--limit N]
    lmms-eval --model sphinx_vi --model_args pretrained=DIR --tasks sphinx_vi_rec,sphinx_vi_vqa \
        --include_path lmms_tasks --output_path lmms_out

Each task is a YAML file, its documents (JSON: the question, the reference answer, the image path and
size) and a `utils.py` that points lmms-eval at the functions below. The documents are the same first
`limit` samples `sphinx_vi.eval` reads (`runner.load_task`), the answer lengths are its
`MAX_NEW_TOKENS`, and the per-sample scores are its scorers on one sample, so the means agree.
Everything stays local: a JSON file read by `datasets`, images opened from disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from ..grounding import parse
from . import metrics as M
from .runner import MAX_NEW_TOKENS, image_size, load_task

TASKS = ("rec", "vqa")
TASK_PREFIX = "sphinx_vi_"  # lmms-eval's built-in task names win a clash: ours carry the project's name
# per task: lmms-eval metric → higher is better (each the mean of per-sample scores)
METRICS = {"rec": {"rec_acc50": True, "rec_acc30": True, "rec_miou": True}, "vqa": {"vqa_acc": True}}

UTILS = '''"""lmms-eval loads `!function utils.X` from this file; the functions live in sphinx_vi."""
from sphinx_vi.eval.lmms_tasks import doc_to_text, doc_to_visual, process_rec, process_vqa  # noqa: F401
'''


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The held-out question exactly as `sphinx_vi.eval` asks it (its `<image>` placeholder included)."""
    return str(doc["question"])


def process_rec(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    size = (doc["width"], doc["height"])
    gt = parse(doc["answer"], size).boxes[0]
    pred = next(iter(parse(results[0], size).boxes), None)
    scores = M.rec_scores([pred], [gt])
    return {"rec_acc50": scores["acc50"], "rec_acc30": scores["acc30"], "rec_miou": scores["miou"]}


def process_vqa(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"vqa_acc": M.vqa_accuracy([results[0]], [doc["answer"]])}


def task_yaml(task: str) -> str:
    metrics = "".join(f"  - metric: {name}\n    aggregation: mean\n    higher_is_better: {str(hib).lower()}\n"
                      for name, hib in METRICS[task].items())
    return (f"task: {TASK_PREFIX}{task}\n"
            "dataset_path: json\n"
            "dataset_kwargs:\n"
            "  data_files:\n"
            f"    test: {TASK_PREFIX}{task}.json\n"
            "test_split: test\n"
            "output_type: generate_until\n"
            "doc_to_visual: !function utils.doc_to_visual\n"
            "doc_to_text: !function utils.doc_to_text\n"
            "doc_to_target: answer\n"
            "generation_kwargs:\n"
            f"  max_new_tokens: {MAX_NEW_TOKENS[task]}\n"
            "  temperature: 0\n"
            "  do_sample: false\n"
            f"process_results: !function utils.process_{task}\n"
            "metric_list:\n"
            f"{metrics}"
            "metadata:\n"
            "  version: 1.0\n")


def build_tasks(data: str | Path, out: str | Path, limit: int | None = None) -> dict[str, int]:
    """Write the task directory; returns the number of documents per task name."""
    data, out = Path(data), Path(out)
    if not (data / "llava").is_dir():
        raise FileNotFoundError(f"{data}: no llava/ folder (make a held-out set: python -m sphinx_vi.data synth --out {data} --seed 1)")
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for task in TASKS:
        samples = load_task(data, task, limit)
        if not samples:
            continue
        docs = []
        for s in samples:
            width, height = image_size(s)
            docs.append({"id": s.id, "image": str(Path(s.images[0]).resolve()), "width": width, "height": height,
                         "question": s.messages[0]["content"], "answer": s.messages[-1]["content"]})
        name = f"{TASK_PREFIX}{task}"
        (out / f"{name}.json").write_text(json.dumps(docs, ensure_ascii=False, indent=1), encoding="utf-8")
        (out / f"{name}.yaml").write_text(task_yaml(task), encoding="utf-8")
        counts[name] = len(docs)
    if not counts:
        raise FileNotFoundError(f"{data}/llava has none of {', '.join(f'{t}.json' for t in TASKS)}")
    (out / "utils.py").write_text(UTILS, encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.eval.lmms_tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="held-out data directory (synthetic world layout)")
    p.add_argument("--out", required=True, type=Path, help="task directory to write (lmms-eval --include_path)")
    p.add_argument("--limit", type=int, default=None, help="documents per task")
    args = p.parse_args(argv)
    try:
        counts = build_tasks(args.data, args.out, args.limit)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(", ".join(f"{name}: {n} documents" for name, n in counts.items()) + f" in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
