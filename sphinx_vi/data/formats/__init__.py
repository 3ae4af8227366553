"""Readers for on-disk formats real users have; each returns samples plus a report of bad rows."""

from .captions import load_captions
from .coco import load_coco_instances, load_coco_keypoints
from .llava import load_llava
from .refcoco import load_refs
from .text import load_text

__all__ = ["load_captions", "load_coco_instances", "load_coco_keypoints", "load_llava", "load_refs", "load_text"]
