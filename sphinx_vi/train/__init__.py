"""Training: typed config, the two stages, merging, on accelerate."""

from .config import TrainConfig, load_config
from .loop import NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainConfig", "load_config"]
