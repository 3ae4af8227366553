import pytest
import torch
from PIL import Image

from sphinx_vi.grounding import PaddedSquare, format_box, parse
from sphinx_vi.views import ViewConfig, make_views, pad_to_square


def test_view_counts():
    assert ViewConfig(grid=1).num_views == 1
    assert ViewConfig(grid=2).num_views == 5
    assert ViewConfig(grid=3).num_views == 10
    with pytest.raises(ValueError):
        ViewConfig(grid=0)


def test_pad_is_centred_with_the_fill_colour():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = pad_to_square(img, (1, 2, 3))
    assert sq.size == (40, 40)
    assert sq.getpixel((0, 0)) == (1, 2, 3) and sq.getpixel((0, 39)) == (1, 2, 3)
    assert sq.getpixel((0, 10)) == (255, 0, 0) and sq.getpixel((39, 29)) == (255, 0, 0)
    assert PaddedSquare(40, 20).offset == (0, 10)


def test_views_are_global_then_crops_row_by_row():
    # four quadrants of distinct colours: each crop must be a single colour, in TL, TR, BL, BR order
    img = Image.new("RGB", (64, 64))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, c in enumerate(colours):
        img.paste(c, ((i % 2) * 32, (i // 2) * 32, (i % 2) * 32 + 32, (i // 2) * 32 + 32))
    views = make_views(img, ViewConfig(grid=2, resolution=16), (0, 0, 0))
    assert views.shape == (5, 3, 16, 16)
    assert views.min() >= 0.0 and views.max() <= 1.0
    for i, c in enumerate(colours):
        centre = views[1 + i, :, 4:12, 4:12].mean(dim=(1, 2))
        assert torch.allclose(centre, torch.tensor(c, dtype=torch.float32) / 255, atol=0.02)
    assert views[0].shape == (3, 16, 16)  # the global view sees all four colours
    assert views[0, 0].max() > 0.9 and views[0, 2].max() > 0.9


def test_k3_views():
    views = make_views(Image.new("RGB", (30, 50)), ViewConfig(grid=3, resolution=8), (9, 9, 9))
    assert views.shape == (10, 3, 8, 8)


def test_text_coordinates_and_views_share_one_geometry():
    # A box drawn on the original image, written in text, is where the padded square puts it.
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 255, 255), (50, 25, 150, 75))
    text = format_box((50, 25, 150, 75), img.size)
    u1, v1, _u2, _v2 = (float(v) for v in text.strip("[]").split(","))
    g = make_views(img, ViewConfig(grid=1, resolution=100), (0, 0, 0))[0, 0]  # (100, 100), 1 px per 0.01
    assert g[int(v1 * 100) + 2, int(u1 * 100) + 2] > 0.9 and g[int(v1 * 100) - 3, int(u1 * 100) + 2] < 0.1
    assert parse(f"<p>w</p> {text}", img.size).boxes[0] == pytest.approx((50, 25, 150, 75), abs=1)
