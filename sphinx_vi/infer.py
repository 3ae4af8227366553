"""Batch inference over a dataset: `python -m sphinx_vi.infer --model M --data FILE_OR_DIR --task T --out preds.jsonl`.

Inputs: an image folder (every image, with `--prompt` or `--query`), or any file the readers take
(LLaVA JSON/JSONL, COCO instances or keypoints, RefCOCO refs): each sample's first user turn is
asked as written; `--task detect|ground` keeps the detection / REC samples, `chat` keeps all.

- batched, length-grouped (prompts of similar length share a batch), a progress bar;
- resumable: every prediction is appended (flushed) as it is made with its item index; a rerun
  skips what is done, drops a line a kill cut in half, and so writes each prediction exactly once;
- several processes (`torchrun` / `accelerate launch`): each takes every world-th item and writes
  its own part file; the first process merges the parts in item order, so N processes give the
  lines one process gives;
- COCO detection input also gets `<out>.coco.json` in COCO's results format (pycocotools scores it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from .images import ImageError
from .precision import DType

Task = Literal["detect", "ground", "chat"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SAMPLE_TASKS = {"detect": ("detection",), "ground": ("rec",), "chat": None}  # which samples of a file each task keeps


@dataclass(frozen=True)
class Item:
    index: int  # position in the input: the merge order
    id: str
    image: str
    prompt: str  # what the model is asked (a task prompt, or the sample's first user turn)


def items_from(data: Path, task: Task, query: str | None = None, prompt: str | None = None) -> list[Item]:
    """The questions of an image folder (one per image) or of a data file (one per kept sample)."""
    from .prompts import task_prompt
    from .text.tokens import IMAGE_TOKEN

    if data.is_dir():
        images = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"{data}: no images ({', '.join(IMAGE_SUFFIXES)})")
        if task == "chat":
            if not prompt:
                raise ValueError("--prompt: a question to ask about every image of the folder")
            text = prompt
        else:
            if not query:
                raise ValueError(f"--query: what to {task} in every image of the folder")
            text = task_prompt("detect" if task == "detect" else "rec", "auto", **({"category": query} if task == "detect" else {"expression": query}))
        return [Item(i, str(p.relative_to(data)), str(p), text) for i, p in enumerate(images)]
    from .data import load_any

    result = load_any(data)
    keep = SAMPLE_TASKS[task]
    samples = [s for s in result.samples if s.images and (keep is None or s.task in keep)]
    if not samples:
        raise ValueError(f"{data}: no samples with an image for task {task!r} ({result.report.summary()})")
    out = []
    for i, s in enumerate(samples):
        first = next(m["content"] for m in s.messages if m["role"] == "user")
        out.append(Item(i, s.id, str(s.images[0]), first.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "").strip()))
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a predictions file; a last line cut by a kill is dropped from the file too."""
    if not path.exists():
        return []
    rows, good = [], 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        try:
            rows.append(json.loads(line))
            good += len(line)
        except json.JSONDecodeError:
            break  # a torn line: only ever the last one
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def _part(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part-{rank}")


def _done(out: Path) -> dict[int, dict[str, Any]]:
    """Rows already written, by item index: the merged file and every part file (of any world size)."""
    rows: dict[int, dict[str, Any]] = {}
    for path in [out, *sorted(out.parent.glob(f"{out.name}.part-*"))]:
        for row in _read_rows(path):
            rows.setdefault(int(row["index"]), row)
    return rows


def _batches(items: list[Item], size: int) -> list[list[Item]]:
    """Length-grouped: items sorted by prompt length (stable), then cut into batches."""
    ordered = sorted(items, key=lambda it: (len(it.prompt), it.index))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _row(item: Item, task: Task, answer: Any) -> dict[str, Any]:
    return {"index": item.index, "id": item.id, "image": item.image, "task": task, "prompt": item.prompt,
            "answer": answer.text, "image_size": list(answer.image_size),
            "detections": [d.to_dict() for d in answer.detections], "warnings": answer.warnings}


def run(model: str, data: str | Path, task: Task, out: str | Path, *, query: str | None = None, prompt: str | None = None,
        batch_size: int = 8, max_new_tokens: int = 128, stop_after: int | None = None, dtype: DType = "float32") -> Path:
    """Answer every item of `data` with `model`; returns the merged predictions file.

    `stop_after`: stop after that many batches of this process, unmerged (a simulated kill, for tests).
    """
    from accelerate import PartialState

    from .api import SphinxVi

    state = PartialState(cpu=True) if "RANK" in os.environ else None
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    data, out = Path(data), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    items = items_from(data, task, query, prompt)
    done = _done(out)
    mine = [it for it in items if it.index % world == rank and it.index not in done]
    vi = SphinxVi.load(model, dtype=dtype)
    batches = _batches(mine, batch_size)
    with open(_part(out, rank), "a", encoding="utf-8") as f:
        for k, batch in enumerate(tqdm(batches, desc=f"infer {task}" + (f" [{rank}/{world}]" if world > 1 else ""),
                                       disable=not batches, position=rank)):
            if stop_after is not None and k >= stop_after:
                return out
            images, kept = [], []
            for it in batch:
                try:
                    images.append(vi.processor.load(it.image))
                    kept.append(it)
                except ImageError as err:  # a bad image is recorded, the run goes on
                    f.write(json.dumps({"index": it.index, "id": it.id, "image": it.image, "task": task, "error": str(err)},
                                       ensure_ascii=False) + "\n")
            if kept:
                answers = vi.ask(images, [it.prompt for it in kept], max_new_tokens=max_new_tokens)
                for it, answer in zip(kept, answers):
                    f.write(json.dumps(_row(it, task, answer), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        _merge(out, len(items))
        if task == "detect" and _is_coco(data):
            _write_coco_results(out)
    if state is not None:
        state.wait_for_everyone()
    return out


def _merge(out: Path, total: int) -> None:
    """All rows in item order into `out` (atomically); the part files go."""
    rows = _done(out)
    missing = [i for i in range(total) if i not in rows]
    if missing:
        raise RuntimeError(f"{out}: {len(missing)} items have no prediction (e.g. {missing[:5]}); rerun to finish them")
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(total):
            f.write(json.dumps(rows[i], ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    for part in out.parent.glob(f"{out.name}.part-*"):
        part.unlink()


def _is_coco(data: Path) -> bool:
    if not data.is_file():
        return False
    from .data.sources import sniff

    try:
        return sniff(data) == "coco_instances"
    except ValueError:
        return False


def _write_coco_results(out: Path) -> Path:
    """`<out>.coco.json`: COCO's results format (image_id, category_id, bbox x,y,w,h in pixels, score) for pycocotools."""
    results = []
    for row in _read_rows(out):
        if "error" in row:
            continue
        _, image_id, _, category_id = row["id"].split("-")  # coco-{image}-det-{category}
        for rank, det in enumerate(d for d in row["detections"] if d.get("box")):
            x1, y1, x2, y2 = det["box"]
            results.append({"image_id": int(image_id), "category_id": int(category_id), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": round(1.0 - 1e-3 * rank, 6)})  # the model gives no scores: answer order
    path = out.with_name(out.stem + ".coco.json")
    path.write_text(json.dumps(results))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sphinx_vi.infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-shapes", help="checkpoint directory, embedded model or preset")
    p.add_argument("--data", required=True, help="an image folder or a data file (LLaVA JSON/JSONL, COCO, RefCOCO refs)")
    p.add_argument("--task", required=True, choices=list(SAMPLE_TASKS))
    p.add_argument("--out", required=True, help="predictions, one JSON line per item")
    p.add_argument("--query", default=None, help="image folder: the category (detect) or expression (ground)")
    p.add_argument("--prompt", default=None, help="image folder: the question (chat)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "auto"], default="float32")
    args = p.parse_args(argv)
    try:
        out = run(args.model, args.data, args.task, args.out, query=args.query, prompt=args.prompt,
                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, dtype=args.dtype)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"predictions: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
