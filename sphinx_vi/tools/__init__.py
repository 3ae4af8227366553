"""Tools beyond the model: boxes → masks (SAM / GrabCut), masks → edits (Stable Diffusion / Telea), the chain."""

from .chain import ChainResult, run_chain
from .clicks import MaskChoices, MaskPrompt, PromptError
from .inpaint import DiffusersInpainter, EditSettings, TeleaInpainter, load_inpainter, union_mask
from .masks import GrabCutSegmenter, SamSegmenter, load_segmenter

__all__ = [
    "ChainResult", "DiffusersInpainter", "EditSettings", "GrabCutSegmenter", "MaskChoices", "MaskPrompt", "PromptError",
    "SamSegmenter", "TeleaInpainter",
    "load_inpainter", "load_segmenter", "run_chain", "union_mask",
]
