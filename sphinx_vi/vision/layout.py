"""Where every visual token of one image sits: the one statement of the per-view token order.

    image → V views (global, then K×K crops row by row); each view →
        [begin] [Q-Former queries × Q] [cls] [grid tokens × (g² − skip)] [end]

(`skip`: grid tokens dropped from the start of each view, as LLaVA's "patch" selection does on SigLIP.)

`VisualTokenLayout` is what the processor expands `<image>` by (`tokens_per_image`), what the
mixed encoder's `forward` assembles (`assemble`), and what box-guided attention and the
diagnostics read token positions from (`token_boxes`). Nothing else spells the order out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..views import ViewConfig


@dataclass(frozen=True)
class VisualTokenLayout:
    """The visual tokens of one image: `views.num_views` views of `tokens_per_view` tokens each."""

    views: ViewConfig  # K crops per side, R pixels per view
    grid: int  # g: grid tokens per side of a view (G, or G/2 after the 2×2 merge)
    queries: int = 0  # Q-Former queries per view (0 = no Q-Former)
    cls: bool = True  # a global token before the grid
    markers: bool = True  # learned begin/end embeddings around each view
    skip: int = 0  # grid tokens dropped from the start of each view (the first `skip` cells, row-major)

    @property
    def num_views(self) -> int:
        return self.views.num_views

    @property
    def grid_tokens(self) -> int:
        """Grid tokens per view: g² cells less the `skip` first ones."""
        return self.grid * self.grid - self.skip

    @property
    def tokens_per_view(self) -> int:
        """[begin] + queries + [cls] + g² grid tokens + [end]."""
        return 2 * int(self.markers) + self.queries + int(self.cls) + self.grid_tokens

    @property
    def tokens_per_image(self) -> int:
        return self.num_views * self.tokens_per_view

    @property
    def grid_start(self) -> int:
        """Index of a view's first grid token within the view."""
        return int(self.markers) + self.queries + int(self.cls)

    def assemble(
        self,
        grid: torch.Tensor,
        cls: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
        begin: torch.Tensor | None = None,
        end: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-view parts → (B, T, D) tokens in layout order; B = images × views.

        grid (B, g² − skip, D); cls (B, 1, D); queries (B, Q, D); begin and end (D,). A part the layout
        has must be given, one it lacks must not be.
        """
        B, n, D = grid.shape
        if n != self.grid_tokens:
            raise ValueError(f"{n} grid tokens per view, the layout has {self.grid_tokens}")
        for name, part, wanted in (("cls", cls, self.cls), ("queries", queries, self.queries > 0),
                                   ("begin", begin, self.markers), ("end", end, self.markers)):
            if (part is not None) != wanted:
                raise ValueError(f"layout {'needs' if wanted else 'has no'} {name} tokens")
        parts = [grid]
        if cls is not None:
            parts.insert(0, cls)
        if queries is not None:
            if queries.shape[1] != self.queries:
                raise ValueError(f"{queries.shape[1]} queries per view, the layout has {self.queries}")
            parts.insert(0, queries)
        if begin is not None and end is not None:
            parts = [begin.view(1, 1, D).expand(B, 1, D), *parts, end.view(1, 1, D).expand(B, 1, D)]
        return torch.cat(parts, dim=1)  # (B, T, D)

    def cell_boxes(self) -> torch.Tensor:
        """(V, g², 4): the square (x1, y1, x2, y2) each grid cell covers on the padded square, in
        normalised coordinates (the frame the text grammar writes); all g² cells, the skipped ones too."""
        g = self.grid
        edges = torch.arange(g, dtype=torch.float32) / g  # (g,) left/top edge of each cell in its view
        ys, xs = torch.meshgrid(edges, edges, indexing="ij")  # (g, g)
        out = []
        for x0, y0, span in self.views.frames:
            x1, y1 = (x0 + span * xs).reshape(-1), (y0 + span * ys).reshape(-1)  # (g²,)
            out.append(torch.stack([x1, y1, x1 + span / g, y1 + span / g], dim=-1))  # (g², 4)
        return torch.stack(out)  # (V, g², 4)

    def token_boxes(self) -> torch.Tensor:
        """(V·T, 4): the box every visual token of one image covers, NaN for tokens that cover no
        cell (markers, queries, cls), rows in the encoder's output order."""
        cells = self.cell_boxes()  # (V, g², 4)
        out = torch.full((self.num_views, self.tokens_per_view, 4), float("nan"))
        out[:, self.grid_start : self.grid_start + self.grid_tokens] = cells[:, self.skip :]
        return out.reshape(self.tokens_per_image, 4)
