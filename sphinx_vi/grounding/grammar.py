"""The grounding text grammar: write boxes and keypoints as text, and read them back.

Grammar: coordinates are fractions of the padded square, `precision` decimals.

    <p>người đàn ông</p> [0.45,0.20,0.63,0.74]          one box
    <p>quả táo</p> [0.10,0.10,0.20,0.20;0.50,0.50,0.60,0.60]   several boxes
    <p>left shoulder</p> [0.70,0.32]                    a keypoint
    nose[0.65,0.26], left eye[0.66,0.25]                SPHINX's untagged form

`parse` never raises on model output: it tolerates spaces, integers, extra decimals, swapped
corners and values slightly outside [0, 1]; clamps to the image; drops zero-area boxes; and
lists everything it could not read in `ParseResult.warnings`. It runs in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .geometry import PaddedSquare, clip_box, clip_point
from .keypoints import normalize_keypoint_name
from .types import Detection, ParseResult

# Values this far outside [0, 1] are clamped; further out they are rejected as unreadable.
OUT_OF_RANGE_TOLERANCE = 0.1
# A bracket group longer than this is not a coordinate group (bounds the work per '[').
MAX_GROUP_CHARS = 512
# How far back from a bracket the parser looks for its label.
MAX_LABEL_CHARS = 200

_GROUP = re.compile(r"\[([^\[\]]{0,%d})\]" % MAX_GROUP_CHARS)  # noqa: UP031 - braces of the regex would need doubling
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # one coordinate as text (the dialects read it too)
_LABEL_BREAK = re.compile(r"[,.;:!?\n\]]")


def _size(image_size: Sequence[int]) -> PaddedSquare:
    width, height = int(image_size[0]), int(image_size[1])
    return PaddedSquare(width, height)


def _fmt(value: float, precision: int) -> str:
    return f"{min(max(value, 0.0), 1.0):.{precision}f}"


def format_box(box: Sequence[float], image_size: Sequence[int], precision: int = 2) -> str:
    """Pixel box (x1, y1, x2, y2) of an image of `image_size` (w, h) → `[x1,y1,x2,y2]`."""
    return "[" + _box_body(box, _size(image_size), precision) + "]"


def format_boxes(boxes: Iterable[Sequence[float]], image_size: Sequence[int], precision: int = 2) -> str:
    """Several boxes for one phrase → `[x1,y1,x2,y2;x1,y1,x2,y2]`."""
    square = _size(image_size)
    return "[" + ";".join(_box_body(b, square, precision) for b in boxes) + "]"


def _box_body(box: Sequence[float], square: PaddedSquare, precision: int) -> str:
    x1, y1, x2, y2 = box
    u1, v1 = square.to_normalized(min(x1, x2), min(y1, y2))
    u2, v2 = square.to_normalized(max(x1, x2), max(y1, y2))
    return ",".join(_fmt(v, precision) for v in (u1, v1, u2, v2))


def format_point(point: Sequence[float], image_size: Sequence[int], precision: int = 2) -> str:
    """Pixel point (x, y) → `[x,y]`."""
    u, v = _size(image_size).to_normalized(point[0], point[1])
    return f"[{_fmt(u, precision)},{_fmt(v, precision)}]"


def format_phrase(label: str, boxes: Sequence[Sequence[float]], image_size: Sequence[int], precision: int = 2) -> str:
    """`<p>label</p> [..]` for one phrase and its boxes."""
    return f"<p>{label}</p> {format_boxes(boxes, image_size, precision)}"


def format_keypoints(
    points: dict[str, Sequence[float]],
    image_size: Sequence[int],
    box: Sequence[float] | None = None,
    label: str = "person",
    precision: int = 2,
) -> str:
    """One person's keypoints (COCO names → pixel xy), optionally led by its box."""
    parts = [format_phrase(label, [box], image_size, precision)] if box is not None else []
    parts += [f"<p>{name}</p> {format_point(xy, image_size, precision)}" for name, xy in points.items()]
    return ", ".join(parts)


def _label_before(segment: str) -> str:
    """The phrase that labels a bracket: the last `<p>…</p>` right before it, else the trailing words."""
    tail = segment[-MAX_LABEL_CHARS:]
    stripped = tail.rstrip(" \t:=")
    if stripped.endswith("</p>"):
        start = stripped.rfind("<p>", 0, len(stripped) - 4)
        if start != -1:
            return " ".join(stripped[start + 3 : -4].split())
    text = stripped.replace("<p>", " ").replace("</p>", " ")
    breaks = list(_LABEL_BREAK.finditer(text))
    if breaks:
        text = text[breaks[-1].end() :]
    return " ".join(text.split())


def read_numbers(body: str) -> list[float] | None:
    """`0.1, 0.2,0.3 ,0.4` → floats; None if anything but numbers and commas is there."""
    items = body.split(",")
    values: list[float] = []
    for item in items:
        item = item.strip()
        if not NUMBER.fullmatch(item):
            return None
        values.append(float(item))
    return values


def _in_range(values: Sequence[float]) -> bool:
    return all(-OUT_OF_RANGE_TOLERANCE <= v <= 1 + OUT_OF_RANGE_TOLERANCE for v in values)


def _clamp01(v: float) -> float:
    return min(max(v, 0.0), 1.0)


def parse(text: str, image_size: Sequence[int]) -> ParseResult:
    """Read every box and keypoint in `text`, in pixels of an image of `image_size` (w, h)."""
    result = ParseResult()
    if not isinstance(text, str):
        result.warnings.append(f"expected text, got {type(text).__name__}")
        return result
    try:
        square = _size(image_size)
    except (TypeError, ValueError, IndexError):
        result.warnings.append(f"invalid image size {image_size!r}")
        return result
    if square.width <= 0 or square.height <= 0:
        result.warnings.append(f"invalid image size {image_size!r}")
        return result

    person: Detection | None = None  # the person whose keypoints are being collected
    last_box: Detection | None = None  # the last box read, if nothing came after it yet
    cursor = 0
    for match in _GROUP.finditer(text):
        label = _label_before(text[cursor : match.start()])
        cursor = match.end()
        body = match.group(1)
        if not any(c.isdigit() for c in body):
            continue  # not a coordinate group ("[INST]", "[sic]")
        groups = [read_numbers(part) for part in body.split(";")]
        snippet = match.group(0)[:60]
        for values in groups:
            if values is None:
                result.warnings.append(f"unreadable coordinates {snippet!r}")
                continue
            if len(values) not in (2, 4):
                result.warnings.append(f"expected 2 or 4 numbers, got {len(values)} in {snippet!r}")
                continue
            if not _in_range(values):
                result.warnings.append(f"coordinates outside [0, 1] in {snippet!r}")
                continue
            values = [_clamp01(v) for v in values]
            if len(values) == 4:
                u1, v1, u2, v2 = values
                x1, y1 = square.to_pixels(min(u1, u2), min(v1, v2))
                x2, y2 = square.to_pixels(max(u1, u2), max(v1, v2))
                box = clip_box((x1, y1, x2, y2), square.width, square.height)
                if box is None:
                    result.warnings.append(f"empty box (zero area inside the image) {snippet!r}")
                    continue
                det = Detection(label=label or "object", box=box)
                result.detections.append(det)
                last_box, person = det, None
                continue
            # a point: a COCO keypoint joins the current person, anything else stands alone
            xy = clip_point(square.to_pixels(*values), square.width, square.height)
            name = normalize_keypoint_name(label)
            if name is None:
                result.detections.append(Detection(label=label or "point", points={label or "point": xy}))
                last_box = person = None
                continue
            if person is None or name in (person.points or {}):
                if last_box is not None and last_box.points is None:
                    person = last_box  # the box right before the keypoints is this person's box
                    person.points = {}
                else:
                    person = Detection(label="person", points={})
                    result.detections.append(person)
            assert person.points is not None
            person.points[name] = xy
            last_box = None
    return result
