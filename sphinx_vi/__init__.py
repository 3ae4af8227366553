"""sphinx_vi: a SPHINX-style multi-task grounding assistant for Vietnamese.

    from sphinx_vi import SphinxVi
    vi = SphinxVi.from_preset("tiny")
    vi.detect("photo.jpg", "người")  # -> list[Detection] in pixels of the photo
"""

from transformers import AutoConfig, AutoModelForImageTextToText

from .api import GroundedAnswer, SphinxVi
from .configuration import SphinxViConfig
from .generation import Generator
from .grounding import Detection, ParseResult, format_box, parse
from .images import ImageError, ImageTooLargeError, load_image
from .modeling import ImageTokenMismatchError, SphinxViForConditionalGeneration
from .presets import list_presets
from .processing import PromptTooLongError, SphinxViProcessor
from .views import ViewConfig

AutoConfig.register("sphinx_vi", SphinxViConfig, exist_ok=True)
AutoModelForImageTextToText.register(SphinxViConfig, SphinxViForConditionalGeneration, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "Detection",
    "Generator",
    "GroundedAnswer",
    "ImageError",
    "ImageTokenMismatchError",
    "ImageTooLargeError",
    "ParseResult",
    "PromptTooLongError",
    "SphinxVi",
    "SphinxViConfig",
    "SphinxViForConditionalGeneration",
    "SphinxViProcessor",
    "ViewConfig",
    "format_box",
    "list_presets",
    "load_image",
    "parse",
]
