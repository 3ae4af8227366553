import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sphinx_vi.grounding import (
    COCO_KEYPOINTS,
    PaddedSquare,
    box_iou,
    clip_box,
    deduplicate,
    format_box,
    format_boxes,
    format_keypoints,
    format_point,
    parse,
)

W, H = 400, 200  # landscape: padded square of side 400, 100 px of padding on top


def test_padded_square_maps_both_ways():
    sq = PaddedSquare(W, H)
    assert sq.side == 400 and sq.offset == (0, 100)
    assert sq.to_pixels(0.5, 0.5) == (200, 100)
    assert sq.to_normalized(*sq.to_pixels(0.3, 0.7)) == pytest.approx((0.3, 0.7))


def test_format_box_normalises_to_the_padded_square():
    assert format_box((0, 0, 400, 200), (W, H)) == "[0.00,0.25,1.00,0.75]"
    assert format_box((100, 50, 200, 150), (W, H), precision=3) == "[0.250,0.375,0.500,0.625]"


def test_parse_tagged_phrase_returns_pixels_of_the_original_image():
    res = parse("<p>người đàn ông</p> [0.25,0.375,0.50,0.625]", (W, H))
    assert res.warnings == []
    (det,) = res.detections
    assert det.label == "người đàn ông"
    assert det.box == pytest.approx((100, 50, 200, 150))
    assert det.score is None and det.points is None


def test_parse_several_boxes_for_one_phrase():
    res = parse("Có <p>quả táo</p> [0.1,0.3,0.2,0.4;0.5,0.5,0.6,0.6] trên bàn.", (W, H))
    assert [d.label for d in res.detections] == ["quả táo", "quả táo"]
    assert len(res.boxes) == 2


@pytest.mark.parametrize(
    "text",
    [
        "<p>x</p> [ 0.25 , 0.375 , 0.5 , 0.625 ]",  # spaces
        "<p>x</p> [0.250,0.375,0.500,0.625]",  # 3 decimals
        "<p>x</p> [0.5,0.625,0.25,0.375]",  # swapped corners
        "<p>x</p>: [0.25,0.375,0.5,0.625]",
    ],
)
def test_parse_is_lenient(text):
    res = parse(text, (W, H))
    assert res.boxes == [pytest.approx((100, 50, 200, 150))]
    assert res.warnings == []


def test_parse_integers_and_values_slightly_outside_are_clamped_to_the_image():
    res = parse("<p>all</p> [0,0,1,1] <p>edge</p> [-0.05,0.2,1.04,0.9]", (W, H))
    assert res.boxes[0] == pytest.approx((0, 0, 400, 200))
    assert res.boxes[1] == pytest.approx((0, 0, 400, 200))  # the padding is clipped away


def test_parse_drops_zero_area_and_reports_what_it_cannot_read():
    text = (
        "<p>a</p> [0.2,0.2,0.2,0.5] "  # zero width
        "<p>b</p> [0.1,0.0,0.9,0.2] "  # only in the top padding band → empty inside the image
        "<p>c</p> [0.1,0.2,0.3] "  # three numbers
        "<p>d</p> [0.1,abc,0.3,0.4] "  # not numbers
        "<p>e</p> [12,30,45,80] "  # far out of range
        "[INST] <p>f</p> [0.1,0.3,0.2,0.4]"
    )
    res = parse(text, (W, H))
    assert [d.label for d in res.detections] == ["f"]
    assert len(res.warnings) == 5
    assert any("zero area" in w for w in res.warnings)
    assert any("3" in w for w in res.warnings)


@pytest.mark.parametrize("bad", [None, 42, b"bytes"])
def test_parse_never_raises_on_non_text(bad):
    res = parse(bad, (W, H))  # type: ignore[arg-type]
    assert res.detections == [] and res.warnings


def test_parse_rejects_a_bad_image_size_without_raising():
    assert parse("[0.1,0.1,0.2,0.2]", (0, 10)).warnings


def test_keypoints_tagged_with_box_form_one_person():
    box = (100, 50, 200, 150)
    pts = {"nose": (150.0, 60.0), "left shoulder": (170.0, 90.0), "right shoulder": (130.0, 90.0)}
    text = format_keypoints(pts, (W, H), box=box, precision=3)
    res = parse(text, (W, H))
    (person,) = res.detections
    assert person.label == "person"
    assert person.box == pytest.approx(box)
    assert set(person.points) == set(pts)
    for name, xy in pts.items():
        assert person.points[name] == pytest.approx(xy, abs=0.5)


def test_keypoints_untagged_sphinx_form_and_two_people():
    text = "nose[0.65,0.46], left eye[0.66,0.45], right_eye [0.64,0.45]; nose[0.20,0.50], left eye[0.21,0.49]"
    res = parse(text, (W, H))
    assert len(res.detections) == 2
    first, second = res.detections
    assert set(first.points) == {"nose", "left eye", "right eye"}
    assert set(second.points) == {"nose", "left eye"}
    assert first.box is None
    assert first.points["nose"] == pytest.approx((260, 84))


def test_point_with_unknown_name_stands_alone():
    res = parse("<p>the cup handle</p> [0.5,0.5]", (W, H))
    (det,) = res.detections
    assert det.label == "the cup handle" and det.points == {"the cup handle": (200.0, 100.0)}


def test_parse_untagged_box_takes_the_preceding_words_as_label():
    res = parse("Here it is, red circle [0.1,0.3,0.2,0.4].", (W, H))
    assert res.detections[0].label == "red circle"


def test_parse_is_linear_on_hostile_text():
    unit = "[[[<p><p>0.1,0.2,[0.1;;;;,,,]]]" * 10 + "<p>" + "a" * 50
    timings = []
    for n in (200, 800):
        text = unit * n
        t = time.perf_counter()
        parse(text, (W, H))
        timings.append(time.perf_counter() - t)
    assert timings[1] < 1.5  # 800 units ≈ 330 KB
    assert timings[1] / max(timings[0], 1e-4) < 10  # 4× input → well under quadratic (16×)


def test_parse_long_unclosed_bracket_is_fast():
    text = "[" + "0.1," * 200_000
    t = time.perf_counter()
    res = parse(text, (W, H))
    assert time.perf_counter() - t < 1.0
    assert res.detections == []


sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))


@st.composite
def image_and_box(draw):
    w, h = draw(sizes)
    x1 = draw(st.floats(0, w - 1, allow_nan=False))
    y1 = draw(st.floats(0, h - 1, allow_nan=False))
    x2 = draw(st.floats(x1 + 1, w, allow_nan=False)) if x1 + 1 <= w else w
    y2 = draw(st.floats(y1 + 1, h, allow_nan=False)) if y1 + 1 <= h else h
    return (w, h), (x1, y1, x2, y2)


@settings(max_examples=300, deadline=None)
@given(image_and_box(), st.integers(2, 4))
def test_format_parse_round_trip(case, precision):
    (w, h), box = case
    res = parse(f"<p>obj</p> {format_box(box, (w, h), precision)}", (w, h))
    side = max(w, h)
    tol = side * 0.5 * 10**-precision + 1e-6
    if not res.detections:  # rounding collapsed a thin box: reported, never silent
        assert res.warnings
        return
    (det,) = res.detections
    assert det.box == pytest.approx(box, abs=tol)
    x1, y1, x2, y2 = det.box
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


@settings(max_examples=200, deadline=None)
@given(sizes, st.lists(st.tuples(st.sampled_from(COCO_KEYPOINTS), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=17, unique_by=lambda t: t[0]))
def test_keypoint_round_trip(size, items):
    w, h = size
    pts = {name: (u * w, v * h) for name, u, v in items}
    res = parse(format_keypoints(pts, size, precision=4), size)
    (person,) = res.detections
    assert set(person.points) == set(pts)
    tol = max(w, h) * 0.5e-4 + 1e-6
    for name, xy in pts.items():
        assert person.points[name] == pytest.approx(xy, abs=tol)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]<>p/0123456789.,;- xyzđươ\n")), max_size=300), sizes)
def test_parse_never_raises_and_boxes_stay_inside(text, size):
    res = parse(text, size)
    for det in res.detections:
        if det.box is not None:
            x1, y1, x2, y2 = det.box
            assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
        for x, y in (det.points or {}).values():
            assert 0 <= x <= size[0] and 0 <= y <= size[1]


def test_format_boxes_and_point():
    assert format_boxes([(0, 0, 200, 100), (200, 100, 400, 200)], (W, H)) == "[0.00,0.25,0.50,0.50;0.50,0.50,1.00,0.75]"
    assert format_point((200, 100), (W, H)) == "[0.50,0.50]"


def test_geometry_helpers():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert clip_box((-5, -5, 5, 5), 10, 10) == (0, 0, 5, 5)
    assert clip_box((20, 20, 30, 30), 10, 10) is None
    assert deduplicate([(0, 0, 10, 10), (0, 0, 10, 10.1), (20, 20, 30, 30)]) == [0, 2]


def _sphinx_demo_boxes(text: str, width: int, height: int) -> list[tuple[str, list[float]]]:
    """What LLaMA2-Accessory's box demo (accessory/demos/multi_turn_mm_box.py) reads from an answer: tagged phrases
    `<p>…</p> [..]`, then untagged groups, ';' between boxes, numbers matched as `\\d+\\.\\d+`, fractions of the
    padded square drawn at x·max_edge − x_origin."""
    import re

    side = max(width, height)
    x0, y0 = (side - width) // 2, (side - height) // 2
    found, spans = [], []
    for m in re.finditer(r"<p>(.*?)<\/p>\s*(\[[\d.,;\s]*\])", text):
        spans.append(m.span(2))
        for group in m.group(2)[1:-1].split(";"):
            found.append((m.group(1), [float(v) for v in re.findall(r"\d+\.\d+", group)]))
    for m in re.finditer(r"(?<!\|\|\|)(\[[\d.,;\s]*\])", text):
        if m.span(1) not in spans:
            for group in m.group(1)[1:-1].split(";"):
                found.append(("", [float(v) for v in re.findall(r"\d+\.\d+", group)]))
    return [(label, [v * side - (x0 if i % 2 == 0 else y0) for i, v in enumerate(values)]) for label, values in found]


@pytest.mark.parametrize("answer", [
    "<p>A man</p> [0.12,0.30,0.45,0.78] is riding <p>a horse</p> [0.40,0.42,0.93,0.82].",  # inside the image's rows 0.17–0.83
    "There are two dogs: <p>dogs</p> [0.10,0.20,0.30,0.40;0.55,0.25,0.80,0.70]",
    "The cup is at [0.61,0.33,0.74,0.52].",
    "<p>left shoulder</p> [0.35,0.41], <p>nose</p> [0.52,0.20]",
])
def test_sphinx_demo_answers_give_the_boxes_its_own_regex_gives(answer):
    width, height = 640, 427  # landscape: the square pads top and bottom
    theirs = _sphinx_demo_boxes(answer, width, height)
    result = parse(answer, (width, height))
    ours = [list(d.box) for d in result.detections if d.box is not None] + \
           [list(p) for d in result.detections for p in (d.points or {}).values()]
    flat = [x for box in sorted(ours) for x in box]
    assert len(ours) == len(theirs) and flat == pytest.approx([x for box in sorted(v for _, v in theirs) for x in box], abs=1e-6)
    tagged = {label for label, _ in theirs if label}
    assert tagged <= {d.label for d in result.detections} | {k for d in result.detections for k in (d.points or {})}
