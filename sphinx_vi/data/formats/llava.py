"""LLaVA conversation JSON / JSONL: `id`, `image` (a path or a list), `conversations` with `from`/`value`."""

from __future__ import annotations

from pathlib import Path

from ...text.tokens import IMAGE_TOKEN
from ..samples import LoadReport, LoadResult, Sample
from .common import ROLE, answer_problem, check_image, iter_json_rows


def load_llava(path: str | Path, image_root: str | Path | None = None, check_images: bool = True) -> LoadResult:
    """Read a LLaVA-format file; rows that cannot be used are skipped and counted with their reason.

    Images resolve against `image_root` (default: the file's folder, then its parent). A row with
    an image but no `<image>` placeholder gets one in front of its first human turn, as LLaVA does.
    """
    path = Path(path)
    report = LoadReport(str(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    roots = [Path(image_root)] if image_root is not None else [path.parent, path.parent.parent]
    samples: list[Sample] = []
    for where, row in iter_json_rows(path, report):
        report.total += 1
        sample, problem = _row_to_sample(row, where, roots, check_images)
        if problem:
            report.skip(problem, where)
        else:
            samples.append(sample)  # type: ignore[arg-type]
    report.loaded = len(samples)
    return LoadResult(samples, report)


def _resolve(name: str, roots: list[Path]) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for root in roots:
        if (root / p).exists():
            return root / p
    return roots[0] / p


def _row_to_sample(row, where: str, roots: list[Path], check_images: bool) -> tuple[Sample | None, str | None]:
    if not isinstance(row, dict):
        return None, "row is not an object"
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None, "empty conversation"
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in ROLE:
            return None, "malformed turn (needs from: human|gpt and a text value)"
        messages.append({"role": ROLE[turn["from"]], "content": turn["value"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return None, "empty conversation"
    names = row.get("image") or []
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None, "image field is not a path or a list of paths"
    placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if names and placeholders == 0:
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = IMAGE_TOKEN * len(names) + "\n" + first["content"]
        placeholders = len(names)
    if placeholders != len(names):
        return None, f"{placeholders} <image> placeholder(s) for {len(names)} image(s)"
    images = [_resolve(n, roots) for n in names]
    if check_images:
        for img in images:
            problem, size = check_image(img)
            if problem:
                return None, problem
            if len(images) == 1:
                for m in messages:
                    if m["role"] == "assistant" and "[" in m["content"]:
                        bad = answer_problem(m["content"], size)  # type: ignore[arg-type]
                        if bad:
                            return None, bad
    sample = Sample(
        id=str(row.get("id", where)),
        messages=messages,
        images=images,
        task=str(row.get("task", "chat")),
        lang=row.get("lang"),
    )
    return sample, None
