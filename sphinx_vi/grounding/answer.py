"""An answer's text read into what a caller uses: detections in pixels, and the parse warnings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .dialects import DIALECTS, Dialect, get_dialect
from .geometry import deduplicate
from .types import Detection


@dataclass
class GroundedAnswer:
    """The model's text, what the parser read from it (pixels of the image), and what it could not."""

    text: str
    detections: list[Detection]
    warnings: list[str]
    image_size: tuple[int, int]

    def to_dict(self) -> dict:
        """JSON-ready: the detections as dicts, the size as [width, height]."""
        return {"text": self.text, "detections": [d.to_dict() for d in self.detections], "warnings": list(self.warnings),
                "image_size": list(self.image_size)}


def read_answer(text: str, image_size: Sequence[int], dialect: str | Dialect = "sphinx") -> GroundedAnswer:
    """Parse `text` (in a model's grammar: `grounding.dialects`, by name or instance) against the image it answers:
    near-duplicate boxes merged, boxless detections kept. An answer with no boxes that another grammar can read says so."""
    grammar = get_dialect(dialect) if isinstance(dialect, str) else dialect
    dialect = grammar.name
    parsed = grammar.parse(text, image_size)
    size = (int(image_size[0]), int(image_size[1]))
    warnings = list(parsed.warnings)
    if not parsed.detections:
        other = next((name for name, d in DIALECTS.items() if name != dialect and d.parse(text, image_size).detections), None)
        if other is not None:
            warnings.append(f"no {dialect} boxes in the answer, but it reads as {other}: is the model configured with the right grammar?")
    return GroundedAnswer(text, _dedup(parsed.detections), warnings, size)


def _dedup(detections: list[Detection]) -> list[Detection]:
    boxed = [d for d in detections if d.box is not None]
    keep = set(deduplicate([d.box for d in boxed]))  # type: ignore[misc]
    return [d for i, d in enumerate(boxed) if i in keep] + [d for d in detections if d.box is None]
