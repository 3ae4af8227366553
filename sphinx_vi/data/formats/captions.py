"""Caption pairs (JSONL/JSON rows with `image` and `caption`): the stage-1 alignment data."""

from __future__ import annotations

from pathlib import Path

from ...text.tokens import IMAGE_TOKEN
from ..samples import LoadReport, LoadResult, Sample
from .common import check_image, iter_json_rows


def load_captions(path: str | Path, image_root: str | Path | None = None, check_images: bool = True) -> LoadResult:
    """Each row → a chat sample: user `<image>`, assistant the caption (loss on the caption)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    root = Path(image_root) if image_root is not None else path.parent.parent
    report = LoadReport(str(path))
    samples = []
    for where, row in iter_json_rows(path, report):
        report.total += 1
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            report.skip("row needs an image path", where)
            continue
        caption = row.get("caption") or row.get("text")
        if not isinstance(caption, str) or not caption.strip():
            report.skip("empty caption", where)
            continue
        image = Path(row["image"]) if Path(row["image"]).is_absolute() else root / row["image"]
        if check_images:
            problem, _ = check_image(image)
            if problem:
                report.skip(problem, where)
                continue
        messages = [{"role": "user", "content": IMAGE_TOKEN}, {"role": "assistant", "content": caption.strip()}]
        samples.append(Sample(id=str(row.get("id", where)), messages=messages, images=[image], task="caption", lang=row.get("lang")))
    report.loaded = len(samples)
    return LoadResult(samples, report)
