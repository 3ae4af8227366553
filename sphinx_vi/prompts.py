"""Task prompts in Vietnamese and English, following SPHINX's wording."""

from __future__ import annotations

import re
from typing import Literal

Lang = Literal["vi", "en"]
Task = Literal["rec", "reg", "detect", "keypoints_box", "keypoints", "grounded_caption", "text_detection",
               "chart_to_table", "vqa_short"]  # the keys of TASK_PROMPTS

TASK_PROMPTS: dict[str, dict[str, str]] = {
    "rec": {
        "en": "Please provide the bounding box coordinate of the region this sentence describes: {expression}.",
        "vi": "Hãy cho biết tọa độ khung bao của vùng mà câu sau mô tả: {expression}.",
    },
    "reg": {
        "en": "Please provide a short description for this region: {box}.",
        "vi": "Hãy mô tả ngắn gọn vùng này: {box}.",
    },
    "detect": {
        "en": "Detect all {category} shown in the image.",
        "vi": "Phát hiện tất cả {category} có trong ảnh.",
    },
    "keypoints_box": {
        "en": "Detect the key points of the person in the region {box}.",
        "vi": "Phát hiện các điểm khớp của người trong vùng {box}.",
    },
    "keypoints": {
        "en": "Detect the key points of every person in the image.",
        "vi": "Phát hiện các điểm khớp của mọi người trong ảnh.",
    },
    "grounded_caption": {
        "en": "Describe the image concisely. Include the bounding box for each mentioned object.",
        "vi": "Mô tả ngắn gọn bức ảnh. Kèm khung bao cho mỗi đối tượng được nhắc đến.",
    },
    "text_detection": {
        "en": "Detect all the text in the image and give the bounding box of each word.",
        "vi": "Phát hiện tất cả chữ trong ảnh và cho biết khung bao của từng từ.",
    },
    "chart_to_table": {
        "en": "Convert the chart into a table.",
        "vi": "Chuyển biểu đồ thành bảng.",
    },
    "vqa_short": {
        "en": "{question} Answer the question using a single word or phrase.",
        "vi": "{question} Trả lời bằng một từ hoặc một cụm từ.",
    },
}

# Letters that only Vietnamese uses among the two languages (tones and hooks).
_VI_CHARS = re.compile(
    "[àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ]", re.IGNORECASE
)


def detect_language(text: str) -> Lang:
    """'vi' when the text carries Vietnamese diacritics, else 'en'."""
    return "vi" if _VI_CHARS.search(text or "") else "en"


def task_prompt(task: Task | str, lang: Lang | Literal["auto"] = "auto", **fields: str) -> str:
    """Fill the prompt of `task` in `lang` ('auto' picks the language of the fields)."""
    if task not in TASK_PROMPTS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(sorted(TASK_PROMPTS))}")
    if lang == "auto":
        lang = detect_language(" ".join(fields.values()))
    if lang not in ("vi", "en"):
        raise ValueError(f"lang must be 'vi', 'en' or 'auto', got {lang!r}")
    return TASK_PROMPTS[task][lang].format(**fields)


# Prompt fields that name what the answer's boxes ground (REC's expression, detection's category).
PHRASE_FIELDS = ("expression", "category")


def _phrase_patterns() -> list[re.Pattern]:
    patterns = []
    for templates in TASK_PROMPTS.values():
        for template in templates.values():
            for field in PHRASE_FIELDS:
                key = "{" + field + "}"
                if key in template and template.count("{") == 1:
                    prefix, suffix = template.split(key)
                    patterns.append(re.compile(re.escape(prefix) + r"(.+?)" + re.escape(suffix)))
    return patterns


_PHRASE_PATTERNS = _phrase_patterns()


def find_phrase(text: str) -> tuple[int, int] | None:
    """Character span of the phrase a task prompt in `text` asks about (REC's expression, detection's
    category); the last such prompt wins; None when `text` holds none."""
    best = None
    for pattern in _PHRASE_PATTERNS:
        for m in pattern.finditer(text):
            if best is None or m.start(1) > best[0]:
                best = m.span(1)
    return best
