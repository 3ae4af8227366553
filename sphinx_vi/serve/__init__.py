"""OpenAI-compatible serving of a sphinx_vi checkpoint on transformers' serving stack (`transformers serve`).

`python -m sphinx_vi serve --model tiny-shapes` starts `/v1/chat/completions` (streaming and not),
`/v1/models` and `/health`; every answer also carries, per choice, a `grounding` extension field:
the detections in pixels of the request's image and the parser's warnings.
"""

from .app import build_app, serve
from .config import ServeConfig

__all__ = ["ServeConfig", "build_app", "serve"]
