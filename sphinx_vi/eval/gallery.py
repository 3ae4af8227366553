"""A contact sheet of REC answers: each held-out image with the target box and the model's box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ..fonts import font
from ..grounding import box_iou
from ..grounding.geometry import Box
from ..text.tokens import IMAGE_TOKEN

TARGET, MODEL = (60, 180, 75), (230, 25, 75)  # green, red


@dataclass
class RecResult:
    """One REC question: its image, the user turn that asks for the object, the model's raw answer, and both boxes in pixels."""

    image: str
    question: str
    answer: str
    pred: Box | None
    gt: Box

    @property
    def iou(self) -> float:
        return 0.0 if self.pred is None else box_iou(self.pred, self.gt)

    @property
    def caption(self) -> str:
        """The question's text without the image placeholder, its end kept (where the phrase is) if long."""
        text = " ".join(self.question.replace(IMAGE_TOKEN, " ").split())
        return text if len(text) <= 32 else "…" + text[-31:]


def draw_rec_gallery(results: Sequence[RecResult], out: str | Path, columns: int = 4, cell: int = 256) -> Path:
    """Draw `results` in a grid (target green, model red, the phrase and IoU under each) and save a PNG."""
    if not results:
        raise ValueError("no REC results to draw")
    caption_h = 40
    rows = -(-len(results) // columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + caption_h)), (255, 255, 255))
    text_font = font(max(8, cell // 20))  # 32 characters fit a cell
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(results):
        x, y = (i % columns) * cell, (i // columns) * (cell + caption_h)
        with Image.open(r.image) as im:
            scale = cell / max(im.size)
            sheet.paste(im.convert("RGB").resize((round(im.width * scale), round(im.height * scale))), (x, y))
        for box, colour, width in ((r.gt, TARGET, 5), (r.pred, MODEL, 2)):  # the model's box drawn inside the target's
            if box is not None:
                draw.rectangle([x + box[0] * scale, y + box[1] * scale, x + box[2] * scale, y + box[3] * scale],
                               outline=colour, width=width)
        verdict = "no box" if r.pred is None else f"IoU {r.iou:.2f}" + (" ✓" if r.iou >= 0.5 else " ✗")
        draw.text((x + 4, y + cell + 2), r.caption, font=text_font, fill=(0, 0, 0))
        draw.text((x + 4, y + cell + 20), verdict, font=text_font, fill=TARGET if r.iou >= 0.5 else MODEL)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
