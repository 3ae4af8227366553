"""Grounding grammar: boxes and keypoints as text, parsed back into typed detections."""

from .answer import GroundedAnswer, read_answer
from .geometry import PaddedSquare, box_area, box_iou, clip_box, clip_point, deduplicate
from .grammar import format_box, format_boxes, format_keypoints, format_phrase, format_point, parse
from .keypoints import COCO_KEYPOINTS, COCO_SKELETON, KEYPOINT_LABELS_VI, normalize_keypoint_name
from .types import Detection, ParseResult

__all__ = [
    "COCO_KEYPOINTS",
    "COCO_SKELETON",
    "KEYPOINT_LABELS_VI",
    "Detection",
    "GroundedAnswer",
    "PaddedSquare",
    "ParseResult",
    "box_area",
    "box_iou",
    "clip_box",
    "clip_point",
    "deduplicate",
    "format_box",
    "format_boxes",
    "format_keypoints",
    "format_phrase",
    "format_point",
    "normalize_keypoint_name",
    "parse",
    "read_answer",
]
