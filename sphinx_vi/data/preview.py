"""Contact sheet of a data directory: images with their answers drawn, and the text beneath."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

from ..draw import draw_detections
from ..fonts import font
from ..grounding import parse
from .formats.llava import load_llava


def contact_sheet(data_dir: str | Path, out: str | Path, num: int = 16, seed: int = 0, tile: int = 256) -> Path:
    """Draw `num` samples (spread over the tasks) from DIR/llava/*.json into one PNG."""
    data_dir = Path(data_dir)
    files = sorted((data_dir / "llava").glob("*.json*"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no llava/*.json files (run `python -m sphinx_vi.data synth` first)")
    per_task = [load_llava(f, image_root=data_dir).samples for f in files]
    rng = random.Random(seed)
    picks: list = []
    while len(picks) < num and any(per_task):
        for samples in per_task:
            if samples and len(picks) < num:
                picks.append(samples.pop(rng.randrange(len(samples))))
    cols = min(4, max(1, len(picks)))
    rows = (len(picks) + cols - 1) // cols
    text_h = 110
    sheet = Image.new("RGB", (cols * tile, rows * (tile + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    small = font(11)
    for k, sample in enumerate(picks):
        image = Image.open(sample.images[0]).convert("RGB")
        answer = sample.messages[-1]["content"]
        drawn = draw_detections(image, parse(answer, image.size).detections).resize((tile, tile), Image.Resampling.NEAREST)
        x, y = (k % cols) * tile, (k // cols) * (tile + text_h)
        sheet.paste(drawn, (x, y))
        question = sample.messages[-2]["content"].replace("<image>\n", "")
        lines = [f"[{sample.task}] " + question, "→ " + answer]
        wrapped = [w for line in lines for w in textwrap.wrap(line, 42)][:8]
        draw.multiline_text((x + 4, y + tile + 2), "\n".join(wrapped), font=small, fill=(20, 20, 20), spacing=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
