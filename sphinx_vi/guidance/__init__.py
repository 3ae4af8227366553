"""Guided attention: where chosen heads should look (`targets`, pure) and the loss that teaches them (`hooks`).

A small LLM trained from scratch finds it slow to learn *which* visual tokens a phrase refers to:
its attention starts uniform, and the gradient that would sharpen it is weak until the answer
already depends on the right tokens (reports/learning/history.md: REC stuck at the constant-box
level for every recipe without box guidance). The labels already say where to look. Training uses
both halves (`sphinx_vi.train.aux_losses`); the diagnostics read only the targets.
"""

from .hooks import ROTARY, AttentionGuide, UnsupportedGuideModelError, box_term, phrase_term
from .targets import Answer, CoordinateGroup, GuideTargets, TargetReader, coordinate_groups, covered_cells, pieces_in_span

__all__ = [
    "ROTARY", "Answer", "AttentionGuide", "CoordinateGroup", "GuideTargets", "TargetReader", "UnsupportedGuideModelError",
    "box_term", "coordinate_groups", "covered_cells", "phrase_term", "pieces_in_span",
]
