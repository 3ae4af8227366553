"""Other models' grounding grammars → the same Detections in pixels: round trips, upstream agreement, hostile text."""

from __future__ import annotations

import random
import time

import pytest
from transformers.models.florence2.processing_florence2 import Florence2PostProcessor
from transformers.models.kosmos2.processing_kosmos2 import patch_index_to_coordinate
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from sphinx_vi.grounding import Detection
from sphinx_vi.grounding.dialects import DIALECTS, UnknownDialectError, parse_as
from sphinx_vi.text.tokenizer import TINY_TOKENIZER, load_tokenizer

SIZE = (640, 480)
# how far a written box may move, in pixels of the 640×480 image: half a step of each grammar's grid (ours: 2 decimals
# of the 640-pixel padded square; Kosmos-2: a 32×32 grid read at patch centres, a whole cell; the 1000-grids ~1 pixel)
TOLERANCE_PX = {"sphinx": 640 / 100 / 2 + 0.01, "kosmos2": 640 / 32 + 0.01}


def _random_detections(rng: random.Random, n: int) -> list[Detection]:
    out = []
    for i in range(n):
        x1, y1 = rng.uniform(0, SIZE[0] - 100), rng.uniform(0, SIZE[1] - 100)
        out.append(Detection(f"vật {i}", (x1, y1, rng.uniform(x1 + 60, SIZE[0]), rng.uniform(y1 + 60, SIZE[1]))))
    return out


@pytest.mark.parametrize("name", list(DIALECTS))
def test_every_dialect_reads_back_what_it_writes(name):
    dialect, rng = DIALECTS[name], random.Random(0)
    for _ in range(30):
        dets = _random_detections(rng, rng.randint(1, 3))
        got = dialect.parse(dialect.format(dets, SIZE), SIZE)
        assert not got.warnings
        assert [d.label for d in got.detections] == [d.label for d in dets]
        for want, have in zip(dets, got.detections, strict=True):
            assert max(abs(a - b) for a, b in zip(want.box, have.box)) <= TOLERANCE_PX.get(name, 1.5), (name, want, have)


HOSTILE = {
    "sphinx": "[[[<p><p>0.1,0.2,[0.1;;;;,,,]]]",
    "kosmos2": "<phrase>a</phrase><object><patch_index_0001></delimiter_of_multi_objects/><object>",
    "qwen_vl": "<ref><ref>a</ref><box>(1,2),(3,<box>((((",
    "internvl": "<ref>a</ref><box>[[1, 2, 3]]</box><box>[[[[",
    "qwen2_5_vl": '{"bbox_2d": [1, 2, {"label": "\\"a", {{{"bbox_2d":[',
    "florence2": "<loc_1><loc_2><loc_3><loc_99999><loc_",
    "shikra": "[0.1,0.2,[0.3;;((((0.1,",
    "ferret": "[1, 2, 3, [4, 5]]]] [",
    "cogvlm": "[[1,2,3,4;5,6,7]][[[[",
}


@pytest.mark.parametrize("name", list(DIALECTS))
def test_hostile_text_never_raises_and_costs_linear_time(name):
    unit = HOSTILE[name] + " chữ " * 3
    timings = []
    for n in (40_000, 160_000):
        text = (unit * (n // len(unit) + 1))[:n]
        best = float("inf")
        for _ in range(3):  # best of 3: a millisecond-scale timing beside other tests is mostly scheduler noise
            t = time.perf_counter()
            DIALECTS[name].parse(text, SIZE)  # never raises
            best = min(best, time.perf_counter() - t)
        timings.append(best)
    assert timings[1] < 2.0
    assert timings[1] / max(timings[0], 5e-3) < 10  # 4× the text → well under quadratic (16×); below 5 ms is noise
    for junk in ("", "không có gì", "\x00\ufffd" * 10, "[" * 300_000, 12345, None):
        result = DIALECTS[name].parse(junk, SIZE)  # type: ignore[arg-type]
        assert result.detections == []


def test_florence2_agrees_with_transformers_post_processor():
    upstream = Florence2PostProcessor({}, load_tokenizer(TINY_TOKENIZER))
    text = "a cat<loc_100><loc_200><loc_500><loc_800>a dog<loc_625><loc_104><loc_937><loc_625><loc_10><loc_10><loc_20><loc_20>"
    want = [(g["cat_name"], box) for g in upstream.parse_phrase_grounding_from_text_and_spans(text, image_size=SIZE) for box in g["bbox"]]
    got = parse_as("florence2", text, SIZE).detections
    assert [d.label for d in got] == [label for label, _ in want] == ["a cat", "a dog", "a dog"]
    for d, (_, box) in zip(got, want, strict=True):
        assert d.box == pytest.approx(box, abs=1.0)  # upstream returns whole pixels


def test_kosmos2_uses_the_patch_grid_of_transformers():
    text = "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>."
    (d,) = parse_as("kosmos2", text, SIZE).detections
    x1, y1, x2, y2 = patch_index_to_coordinate(44, 863, 32)
    assert d.label == "a snowman"
    assert d.box == pytest.approx((x1 * SIZE[0], y1 * SIZE[1], x2 * SIZE[0], y2 * SIZE[1]))
    two = "<phrase>dogs</phrase><object><patch_index_0000><patch_index_0101></delimiter_of_multi_objects/><patch_index_0500><patch_index_0700></object>"
    assert [d.label for d in parse_as("kosmos2", two, SIZE).detections] == ["dogs", "dogs"]


def test_qwen2_5_vl_boxes_are_in_pixels_of_the_resized_input_and_one_broken_object_loses_nothing_else():
    seen_h, seen_w = smart_resize(SIZE[1], SIZE[0], factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 16384)
    assert (seen_w, seen_h) != SIZE  # 640×480 is resized to multiples of 28
    text = (f'```json\n[{{"bbox_2d": [0, 0, {seen_w}, {seen_h}], "label": "ảnh"}}, {{"bbox_2d": [1, 2, "x"], "label": "hỏng"}},\n'
            f' {{"bbox_2d": [0, 0, {seen_w}, {seen_h // 2}], "label": "n\\u1eeda tr\\u00ean"}}]\n```')
    result = parse_as("qwen2_5_vl", text, SIZE)
    assert [d.label for d in result.detections] == ["ảnh", "nửa trên"]
    assert result.detections[0].box == pytest.approx((0, 0, *SIZE))
    assert result.detections[1].box == pytest.approx((0, 0, SIZE[0], SIZE[1] * (seen_h // 2) / seen_h))
    assert any("hỏng" in w for w in result.warnings)


def test_tagged_grammars_keep_the_phrase_across_consecutive_boxes_only():
    qwen = parse_as("qwen_vl", "<ref>mèo</ref><box>(0,0),(500,500)</box><box>(500,500),(1000,1000)</box> và <box>(0,0),(100,100)</box>", SIZE)
    assert [d.label for d in qwen.detections] == ["mèo", "mèo", ""]
    assert qwen.detections[1].box == pytest.approx((320, 240, 640, 480))
    intern = parse_as("internvl", "<ref>chó</ref><box>[[0, 0, 500, 500], [500, 500, 1000, 1000]]</box>", SIZE)
    assert [d.box for d in intern.detections] == [pytest.approx((0, 0, 320, 240)), pytest.approx((320, 240, 640, 480))]


def test_integer_grids_and_fractions():
    cog = parse_as("cogvlm", "hai con mèo [[000,000,500,500;500,500,999,999]]", SIZE).detections
    assert [d.label for d in cog] == ["hai con mèo"] * 2 and cog[1].box == pytest.approx((320, 240, 639.36, 479.52))
    (ferret,) = parse_as("ferret", "The dog [100, 200, 300, 400] sits.", SIZE).detections
    assert ferret.label == "The dog" and ferret.box == pytest.approx((64, 96, 192, 192))
    (shikra,) = parse_as("shikra", "a cat (0.100,0.200,0.500,0.600)", SIZE).detections
    assert shikra.box == pytest.approx((64, 96, 320, 288))
    point = parse_as("ferret", "the nose [320, 240]", SIZE)
    assert point.detections == [] and "point" in point.warnings[0]


def test_an_unknown_dialect_lists_the_known_ones():
    with pytest.raises(UnknownDialectError, match="florence2"):
        parse_as("gpt4v", "[1,2,3,4]", SIZE)


def test_an_answer_in_another_grammar_than_configured_says_so():
    from sphinx_vi.grounding import read_answer

    wrong = read_answer("a cat<loc_100><loc_200><loc_500><loc_800>", SIZE)  # Florence-2 text read as ours
    assert wrong.detections == [] and "reads as florence2" in wrong.warnings[-1]
    right = read_answer("a cat<loc_100><loc_200><loc_500><loc_800>", SIZE, "florence2")
    assert len(right.detections) == 1 and right.warnings == []
    assert read_answer("Có hai hình tròn.", SIZE).warnings == []  # plain text: nothing to say
