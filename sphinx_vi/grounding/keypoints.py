"""The 17 COCO person keypoints: grammar names (English), UI labels (Vietnamese), skeleton."""

from __future__ import annotations

# Order is COCO's; the grammar writes these names verbatim (`left shoulder [0.70,0.32]`).
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left eye",
    "right eye",
    "left ear",
    "right ear",
    "left shoulder",
    "right shoulder",
    "left elbow",
    "right elbow",
    "left wrist",
    "right wrist",
    "left hip",
    "right hip",
    "left knee",
    "right knee",
    "left ankle",
    "right ankle",
)

# Vietnamese labels for the UI; the grammar itself stays English, as in SPHINX.
KEYPOINT_LABELS_VI: dict[str, str] = {
    "nose": "mũi",
    "left eye": "mắt trái",
    "right eye": "mắt phải",
    "left ear": "tai trái",
    "right ear": "tai phải",
    "left shoulder": "vai trái",
    "right shoulder": "vai phải",
    "left elbow": "khuỷu tay trái",
    "right elbow": "khuỷu tay phải",
    "left wrist": "cổ tay trái",
    "right wrist": "cổ tay phải",
    "left hip": "hông trái",
    "right hip": "hông phải",
    "left knee": "đầu gối trái",
    "right knee": "đầu gối phải",
    "left ankle": "mắt cá chân trái",
    "right ankle": "mắt cá chân phải",
}

# COCO skeleton as pairs of keypoint names (for drawing).
COCO_SKELETON: tuple[tuple[str, str], ...] = (
    ("left ankle", "left knee"),
    ("left knee", "left hip"),
    ("right ankle", "right knee"),
    ("right knee", "right hip"),
    ("left hip", "right hip"),
    ("left shoulder", "left hip"),
    ("right shoulder", "right hip"),
    ("left shoulder", "right shoulder"),
    ("left shoulder", "left elbow"),
    ("right shoulder", "right elbow"),
    ("left elbow", "left wrist"),
    ("right elbow", "right wrist"),
    ("left eye", "right eye"),
    ("nose", "left eye"),
    ("nose", "right eye"),
    ("left eye", "left ear"),
    ("right eye", "right ear"),
    ("left ear", "left shoulder"),
    ("right ear", "right shoulder"),
)


def normalize_keypoint_name(text: str) -> str | None:
    """Map `Left_Shoulder`, ` left  shoulder ` etc. to the canonical COCO name, else None."""
    name = " ".join(text.replace("_", " ").replace("-", " ").lower().split())
    return name if name in _KEYPOINT_SET else None


_KEYPOINT_SET = frozenset(COCO_KEYPOINTS)
