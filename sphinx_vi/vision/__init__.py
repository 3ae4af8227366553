"""Vision front end: backend registry, the towers, and the mixed encoder."""

from . import convnext, hf_towers, qformer  # noqa: F401  (registers the backends)
from .base import BACKENDS, EncoderSpec, GridFeatures, VisionBackend, WeightsNotFoundError, register_backend
from .mixed import MixedVisionEncoder, VisionConfig, build_backend

__all__ = [
    "BACKENDS",
    "EncoderSpec",
    "GridFeatures",
    "MixedVisionEncoder",
    "VisionBackend",
    "VisionConfig",
    "WeightsNotFoundError",
    "build_backend",
    "register_backend",
]
