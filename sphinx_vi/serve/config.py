"""What a server is started with: the model, where it listens, and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..precision import DType
from ..quantization import Quantization

# A request body above this is refused (413) before it is read: room for a 12 MP photo as a base64 data URL.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Pixels of a request's image above this are refused (413) before they are decoded: a 25 MP photo fits.
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
# Text above this many characters is refused before it is tokenized (tokenizing megabytes costs memory and time
# for a prompt the context could never hold): 64 characters per token of a 4k context.
DEFAULT_MAX_PROMPT_CHARS = 262_144


@dataclass
class ServeConfig:
    model: str = "tiny-shapes"  # a checkpoint directory, an embedded model or a preset
    served_model_name: str | None = None  # the name clients send as `model` (default: `model` as given)
    host: str = "127.0.0.1"  # loopback unless asked: a served model is reachable by anyone who can reach the port
    port: int = 8000
    api_key: str | None = None  # when set, every route but /health wants `Authorization: Bearer <key>`
    image_root: Path | None = None  # local image paths are served only from inside this directory (off by default)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    max_new_tokens: int = 256  # the answer length when a request names none
    max_beams: int = 4  # the most beams a request's generation_config may ask for (each is a cache of its own)
    dtype: DType = "auto"
    quantization: Quantization | None = None
    seed: int = 0  # init seed of a preset (random weights)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model
