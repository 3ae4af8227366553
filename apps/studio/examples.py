"""The studio's examples, in two groups: what the embedded demo model was trained for, and photos to click on.

The demo group is chosen, not drawn: `python -m apps.studio.examples` synthesizes held-out scenes of
the shapes world (a seed the model never trained on), asks the demo model each scene's detection
question exactly as the studio asks it, and keeps the scenes it answers right — every expected box
found at IoU ≥ `SELECT_IOU`, nothing extra. They are written with their questions and expected boxes
to `sphinx_vi/assets/examples/demo/examples.json`; `tests/test_studio.py` checks every one again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image

DEMO_MODEL = "tiny-shapes"
SELECT_IOU = 0.7  # margin at selection time; the test asks for 0.5
CHECK_IOU = 0.5
PHOTOS = ("coffee", "chelsea", "astronaut")  # scikit-image's real photos, for the click-to-segment workflow


@dataclass(frozen=True)
class DemoExample:
    image: Path
    query: str
    boxes: list[list[float]]  # expected, pixels


def demo_dir() -> Path:
    return Path(str(resources.files("sphinx_vi.assets").joinpath("examples", "demo")))


def demo_examples() -> list[DemoExample]:
    """The shipped examples the demo model answers correctly (empty if none were built)."""
    index = demo_dir() / "examples.json"
    if not index.exists():
        return []
    return [DemoExample(demo_dir() / e["image"], e["query"], e["boxes"]) for e in json.loads(index.read_text(encoding="utf-8"))]


def photos(folder: Path) -> list[Path]:
    """Real photos from scikit-image, written once to `folder`."""
    from skimage import data as skdata

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in PHOTOS:
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(getattr(skdata, name)()).save(path)
        out.append(path)
    return out


def matches(found: list[tuple[float, float, float, float]], expected: list[list[float]], iou: float) -> bool:
    """Every expected box found at `iou`, one found box each, and nothing else."""
    from sphinx_vi.eval.metrics import match_boxes

    wanted = [(b[0], b[1], b[2], b[3]) for b in expected]
    return len(found) == len(expected) and match_boxes(list(found), wanted, iou) == len(expected)


def category_of(question: str, lang: str) -> str | None:
    """The category a detection question asks for (the inverse of its `task_prompt` template), or None."""
    from sphinx_vi.prompts import task_prompt

    prefix, suffix = task_prompt("detect", lang, category="\x00").split("\x00")  # type: ignore[arg-type]
    if question.startswith(prefix) and question.endswith(suffix) and len(question) > len(prefix) + len(suffix):
        return question[len(prefix) : len(question) - len(suffix)]
    return None


def build(out: Path, count: int = 4, seed: int = 7, candidates: int = 80) -> list[dict]:
    """Choose `count` held-out detection questions the demo model answers right; write them to `out`."""
    from sphinx_vi import SphinxVi
    from sphinx_vi.data.formats import load_llava
    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.grounding import parse

    vi = SphinxVi.load(DEMO_MODEL)
    for old in [*out.glob("*.png"), out / "examples.json"]:  # the previous choice (nothing else in `out` is touched)
        old.unlink(missing_ok=True)
    chosen: list[dict] = []
    seen_queries: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, candidates, seed=seed, tasks=["detection"], progress=False)
        for sample in load_llava(Path(tmp) / "llava" / "detection.json").samples:
            if sample.lang != "vi":
                continue
            query = category_of(sample.messages[0]["content"].split("\n", 1)[-1], "vi")
            if query is None or query in seen_queries:
                continue
            image = Image.open(sample.images[0]).convert("RGB")
            expected = [list(b) for b in parse(sample.messages[-1]["content"], image.size).boxes]
            found = [d.box for d in vi.answer(image, "detect", category=query).detections if d.box is not None]
            if expected and matches(found, expected, SELECT_IOU):
                name = f"{len(chosen):02d}_{Path(sample.images[0]).name}"
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy(sample.images[0], out / name)
                chosen.append({"image": name, "query": query, "boxes": expected})
                seen_queries.add(query)
            if len(chosen) == count:
                break
    (out / "examples.json").write_text(json.dumps(chosen, ensure_ascii=False, indent=1), encoding="utf-8")
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.studio.examples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=demo_dir())
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    chosen = build(args.out, args.count, args.seed)
    for e in chosen:
        print(f"{e['image']}: {e['query']} ({len(e['boxes'])} box(es))")
    return 0 if chosen else 1


if __name__ == "__main__":
    sys.exit(main())
