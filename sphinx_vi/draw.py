"""Draw detections on an image: boxes with labels, keypoints with COCO skeletons."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from .fonts import font
from .grounding import COCO_SKELETON, Detection

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0)]


def draw_detections(image: Image.Image, detections: Sequence[Detection], width: int | None = None) -> Image.Image:
    """A copy of `image` with every box, label, keypoint and skeleton drawn on it."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(1, round(max(out.size) / 200))
    label_font = font(max(9, max(out.size) // 40))
    for i, det in enumerate(detections):
        colour = PALETTE[i % len(PALETTE)]
        if det.box is not None:
            draw.rectangle(det.box, outline=colour, width=width)
            x1, y1 = det.box[0], det.box[1]
            left, top, right, bottom = draw.textbbox((x1, y1), det.label, font=label_font)
            ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
            draw.rectangle((x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2), fill=colour)
            draw.text((x1 + 2, ty), det.label, font=label_font, fill=(255, 255, 255))
        points = det.points or {}
        for a, b in COCO_SKELETON:
            if a in points and b in points:
                draw.line((*points[a], *points[b]), fill=colour, width=width)
        radius = width + 1
        for x, y in points.values():
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255))
    return out
