"""The visual-token layout: counts, token boxes, and the encoder's output in exactly that order."""

import pytest
import torch

from sphinx_vi.views import ViewConfig
from sphinx_vi.vision.layout import VisualTokenLayout


def test_visual_token_boxes_follow_the_view_layout(tiny):
    vc, layout = tiny.model.vision.config, tiny.model.vision.layout
    boxes = layout.token_boxes()
    g = vc.grid_size // (2 if vc.merge_2x2 else 1)
    assert layout.grid == g and boxes.shape == (layout.tokens_per_image, 4)
    assert int((~boxes.isnan().any(-1)).sum()) == layout.num_views * g * g  # markers, queries, cls cover no cell
    first = int(vc.image_markers) + vc.qformer_spec.num_queries + int(vc.cls_token)
    assert layout.grid_start == first
    torch.testing.assert_close(boxes[first], torch.tensor([0.0, 0.0, 1 / g, 1 / g]))  # global view, top-left
    second_view = layout.tokens_per_view + first  # crop (0, 0) of the K×K grid covers [0, 1/K]²
    torch.testing.assert_close(boxes[second_view], torch.tensor([0.0, 0.0, 1 / (vc.views_grid * g), 1 / (vc.views_grid * g)]))


def test_the_encoder_writes_its_tokens_in_layout_order(tiny):
    """Markers at each view's ends, Q-Former queries first inside, cls, then the grid; the processor expands to the same count."""
    vision, layout = tiny.model.vision, tiny.model.vision.layout
    assert tiny.processor.settings.tokens_per_image == layout.tokens_per_image == tiny.model.config.layout.tokens_per_image
    px = torch.rand(2, layout.num_views, 3, layout.views.resolution, layout.views.resolution)
    with torch.no_grad():
        tokens = vision(px).view(2, layout.num_views, layout.tokens_per_view, -1)  # (N, V, T, D)
        queries = vision.qformer_projector(vision.qformer(vision._grid_tokens(vision.encoders[vision.qformer.spec.source](px.flatten(0, 1)))))
    torch.testing.assert_close(tokens[:, :, 0], vision.image_begin.expand_as(tokens[:, :, 0]))
    torch.testing.assert_close(tokens[:, :, -1], vision.image_end.expand_as(tokens[:, :, -1]))
    Q = layout.queries
    torch.testing.assert_close(tokens[:, :, 1 : 1 + Q].flatten(0, 1), queries)


def test_layout_counts_and_refusals():
    layout = VisualTokenLayout(ViewConfig(grid=2, resolution=224), grid=16, queries=32)
    assert layout.tokens_per_view == 1 + 32 + 1 + 256 + 1 and layout.tokens_per_image == 5 * 291  # SPHINX-1k: 1455
    plain = VisualTokenLayout(ViewConfig(grid=1, resolution=336), grid=24, cls=False, markers=False)  # LLaVA-1.5
    assert plain.tokens_per_image == 576
    grid = torch.zeros(3, 576, 8)
    assert plain.assemble(grid).shape == (3, 576, 8)
    with pytest.raises(ValueError, match="needs cls"):
        layout.assemble(torch.zeros(1, 256, 8))
    with pytest.raises(ValueError, match="has no begin"):
        plain.assemble(grid, begin=torch.zeros(8), end=torch.zeros(8))
    with pytest.raises(ValueError, match="grid tokens"):
        plain.assemble(torch.zeros(1, 10, 8))
