"""Importers from other model families' checkpoints."""

from .llava import from_llava, sphinx_vi_config_from_llava

__all__ = ["from_llava", "sphinx_vi_config_from_llava"]
