"""The font every drawing uses: DejaVu Sans, shipped with matplotlib, covers Vietnamese diacritics."""

from __future__ import annotations

import os
from functools import cache

import matplotlib
from PIL import ImageFont


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (bold or regular) at `size` pixels."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)
