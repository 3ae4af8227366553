import json

import pytest
import torch
from PIL import Image

from sphinx_vi.data import (
    EncodedDataset,
    LengthGroupedBatches,
    Sample,
    SampleEncoder,
    TooManyBadRowsError,
    collate,
    load_any,
    mix,
    padding_fraction,
)
from sphinx_vi.data.__main__ import main as data_main
from sphinx_vi.data.formats import load_captions, load_llava
from sphinx_vi.text.tokens import IGNORE_INDEX


@pytest.fixture
def llava_dir(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (100, 50), (200, 10, 10)).save(tmp_path / "img" / "a.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "img" / "b.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return tmp_path


GOOD = {"id": "ok", "image": "img/a.png", "conversations": [{"from": "human", "value": "<image>\nWhere is the red box?"},
                                                           {"from": "gpt", "value": "<p>box</p> [0.10,0.30,0.50,0.60]"}]}


def _write_pretty(path, rows_text):
    path.write_text("[\n  " + ",\n  ".join(rows_text) + "\n]\n", encoding="utf-8")


def test_real_format_llava_json_with_a_broken_row_loads_and_reports_it(llava_dir):
    rows = [
        json.dumps(GOOD),
        '{"id": "broken", "image": "img/a.png", "conversations": [{"from": "human", "value": "hi"',  # cut JSON
        json.dumps({**GOOD, "id": "two", "image": ["img/a.png", "img/b.png"],
                    "conversations": [{"from": "human", "value": "<image> vs <image>"}, {"from": "gpt", "value": "Ảnh đầu đỏ hơn."}]}),
        json.dumps({**GOOD, "id": "missing", "image": "img/nope.png"}),
        json.dumps({**GOOD, "id": "unreadable", "image": "img/broken.png"}),
        json.dumps({**GOOD, "id": "outside", "conversations": [GOOD["conversations"][0], {"from": "gpt", "value": "[0.1,0.1,0.4,0.2]"}]}),
        json.dumps({**GOOD, "id": "empty", "conversations": []}),
        json.dumps({**GOOD, "id": "noimage-token", "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "A box."}]}),
    ]
    path = llava_dir / "data.json"
    _write_pretty(path, rows)
    result = load_llava(path)
    assert [s.id for s in result.samples] == ["ok", "two", "noimage-token"]
    assert result.samples[1].images == [llava_dir / "img/a.png", llava_dir / "img/b.png"]
    assert result.samples[2].messages[0]["content"].startswith("<image>\n")  # LLaVA convention
    r = result.report
    assert r.total == 8 and r.loaded == 3
    assert r.skipped == {"broken JSON": 1, "missing image": 1, "unreadable image": 1, "box outside the image": 1, "empty conversation": 1}
    assert "data.json:" in r.examples["broken JSON"][0]
    with pytest.raises(TooManyBadRowsError, match="5 of 8 rows are bad"):
        r.check(max_bad_fraction=0.5)
    r.check(max_bad_fraction=0.7)


def test_jsonl_broken_lines_and_placeholder_mismatch(llava_dir):
    path = llava_dir / "data.jsonl"
    bad_count = {**GOOD, "image": ["img/a.png", "img/b.png"]}
    path.write_text("\n".join([json.dumps(GOOD), "{not json", json.dumps(bad_count), "[1, 2]"]) + "\n")
    result = load_llava(path)
    assert len(result.samples) == 1
    assert result.report.skipped == {"broken JSON": 1, "1 <image> placeholder(s) for 2 image(s)": 1, "row is not an object": 1}


def test_captions_with_bad_rows(llava_dir):
    path = llava_dir / "captions.jsonl"
    rows = [{"image": "img/a.png", "caption": "Một hình đỏ."}, {"image": "img/a.png", "caption": ""}, {"caption": "x"}, {"image": "img/zz.png", "caption": "x"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    result = load_captions(path, image_root=llava_dir)
    assert len(result.samples) == 1 and result.report.bad == 3


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_llava(tmp_path / "nope.json")
    (tmp_path / "weird.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_any(tmp_path / "weird.json")


@pytest.fixture(scope="module")
def encoder(tiny):
    return SampleEncoder(tiny.processor)


def test_labels_cover_only_assistant_turns(tiny, encoder, llava_dir):
    sample = Sample("s", [{"role": "user", "content": "<image>\nCâu hỏi một?"}, {"role": "assistant", "content": "Trả lời một."},
                          {"role": "user", "content": "Câu hỏi hai?"}, {"role": "assistant", "content": "Trả lời hai."}],
                    [llava_dir / "img" / "a.png"])
    enc = encoder(sample)
    tok = tiny.processor.tokenizer
    learned = tok.decode([t for t, lab in zip(enc.input_ids.tolist(), enc.labels.tolist()) if lab != IGNORE_INDEX])
    assert learned == " Trả lời một.</s> Trả lời hai.</s>"
    n_image = int((enc.input_ids == tiny.model.config.image_token_id).sum())
    assert n_image == tiny.model.config.layout.tokens_per_image
    assert enc.pixel_values.shape == (1, 5, 3, 32, 32)
    text = encoder(Sample("t", kind="text", text="Xin chào thế giới."))
    assert (text.labels != IGNORE_INDEX).sum() == len(text) - 1  # everything but <s>


def test_dataset_drops_unreadable_images_and_collate_counts_them(tiny, encoder, llava_dir):
    good = Sample("g", [{"role": "user", "content": "<image>\nx"}, {"role": "assistant", "content": "y"}], [llava_dir / "img" / "a.png"])
    bad = Sample("b", good.messages, [llava_dir / "img" / "broken.png"])
    ds = EncodedDataset([good, bad, Sample("t", kind="text", text="chữ")], encoder)
    batch = collate([ds[0], ds[1], ds[2]], tiny.processor.tokenizer.pad_token_id)
    assert batch["dropped"] == 1 and batch["input_ids"].shape[0] == 2
    assert batch["pixel_values"].shape[0] == 1
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    out = tiny.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"], labels=batch["labels"])
    assert torch.isfinite(out.loss)


def test_mixture_follows_the_weights_and_is_deterministic():
    a = [Sample(f"a{i}") for i in range(10)]
    b = [Sample(f"b{i}") for i in range(1000)]
    drawn = mix({"a": a, "b": b}, {"a": 3, "b": 1}, 4000, seed=1)
    share = sum(s.id.startswith("a") for s in drawn) / len(drawn)
    assert 0.72 < share < 0.78
    assert [s.id for s in drawn[:50]] == [s.id for s in mix({"a": a, "b": b}, {"a": 3, "b": 1}, 50, seed=1)]
    first_ten = [s.id for s in drawn if s.id.startswith("a")][:10]
    assert sorted(first_ten) == sorted(s.id for s in a)  # each dataset is exhausted before it repeats
    with pytest.raises(ValueError, match="unknown datasets"):
        mix({"a": a}, {"a": 1, "c": 1}, 5)


def test_length_grouping_cuts_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in range(2000)]
    grouped = list(LengthGroupedBatches(lengths, 8, seed=0))
    plain = [list(range(i, i + 8)) for i in range(0, 2000, 8)]
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    assert padding_fraction(lengths, grouped) < 0.1 < padding_fraction(lengths, plain)


def test_cli_synth_inspect_preview(tmp_path, capsys):
    assert data_main(["synth", "--out", str(tmp_path / "w"), "--num", "12", "--seed", "1", "--size", "96"]) == 0
    assert "wrote 12 images" in capsys.readouterr().out
    assert data_main(["inspect", str(tmp_path / "w" / "llava" / "detection.json")]) == 0
    out = capsys.readouterr().out
    assert "rows loaded, 0 skipped" in out and "'vi'" in out
    assert data_main(["preview", str(tmp_path / "w"), "--out", str(tmp_path / "sheet.png"), "--num", "6"]) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] >= 256
    assert data_main(["inspect", str(tmp_path / "missing.json")]) == 2
    rows = [json.dumps(GOOD)] * 1 + ["{broken"] * 3
    (tmp_path / "bad.jsonl").write_text("\n".join(rows))
    assert data_main(["inspect", str(tmp_path / "bad.jsonl"), "--max-bad-fraction", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "4 of 4 rows are bad" in err and "3 × broken JSON" in err and "1 × missing image" in err


def test_join_turns_makes_one_conversation_per_image_task_and_language(tmp_path):
    from sphinx_vi.data.turns import join_turns

    def single(i, image, lang, task="rec"):
        return Sample(f"{task}{i}", [{"role": "user", "content": f"<image>\nq{i}"}, {"role": "assistant", "content": f"a{i}"}],
                      [tmp_path / image], task=task, lang=lang)

    samples = [single(0, "x.png", "vi"), single(1, "x.png", "vi"), single(2, "x.png", "vi"), single(3, "x.png", "en"),
               single(4, "y.png", "vi"), single(5, "x.png", "vi", task="vqa"), Sample("t", kind="text", text="chữ")]
    joined = join_turns(samples, max_turns=2, seed=0)
    assert sorted(a for s in joined for a in ([m["content"] for m in s.messages if m["role"] == "assistant"] or [s.text])) == \
        sorted([f"a{i}" for i in range(6)] + ["chữ"])  # every answer is kept, once
    multi = [s for s in joined if len(s.messages) > 2]
    assert len(multi) == 1 and len(multi[0].messages) == 4  # the two-turn x.png/vi/rec conversation (max 2 turns)
    conv = multi[0].messages
    assert conv[0]["content"].startswith("<image>\n") and "<image>" not in conv[2]["content"]
    assert {conv[1]["content"], conv[3]["content"]} <= {"a0", "a1", "a2"} and len(multi[0].images) == 1
    assert join_turns(samples, max_turns=1) == samples
    with pytest.raises(ValueError, match="max_turns"):
        join_turns(samples, max_turns=0)


def test_joined_turns_encode_with_loss_on_every_answer(tiny, tmp_path):
    from sphinx_vi.data.turns import join_turns

    Image.new("RGB", (32, 32), (10, 200, 10)).save(tmp_path / "g.png")
    samples = [Sample(f"s{i}", [{"role": "user", "content": f"<image>\nCâu {i}?"}, {"role": "assistant", "content": f"Đáp {i}"}],
                      [tmp_path / "g.png"], task="vqa", lang="vi") for i in range(3)]
    (conv,) = join_turns(samples, max_turns=3)
    enc = SampleEncoder(tiny.processor)(conv)
    labelled = tiny.processor.tokenizer.decode(enc.labels[enc.labels != IGNORE_INDEX])
    assert all(f"Đáp {i}" in labelled for i in range(3)) and "Câu" not in labelled
    assert enc.pixel_values.shape[0] == 1  # one image, encoded once


def test_join_turns_stops_a_conversation_before_it_outgrows_the_budget(tmp_path):
    from sphinx_vi.data.turns import join_turns

    samples = [Sample(f"k{i}", [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a" * 100}],
                      [tmp_path / "x.png"], task="keypoints", lang="vi") for i in range(5)]
    fits = lambda s: sum(len(m["content"]) for m in s.messages) <= 250  # room for two answers of 100 characters
    joined = join_turns(samples, max_turns=4, fits=fits)
    assert sorted(len(s.messages) // 2 for s in joined) == [1, 2, 2]  # never three turns, nothing lost
    assert all(fits(s) for s in joined)
    assert sorted(x for s in joined for x in s.id.split("+")) == [f"k{i}" for i in range(5)]


def test_sample_length_is_computed_once_per_distinct_text(tiny, tmp_path, monkeypatch):
    from sphinx_vi.data import SampleEncoder

    enc = SampleEncoder(tiny.processor)
    a = Sample("a", [{"role": "user", "content": "<image>\nCâu hỏi"}, {"role": "assistant", "content": "[0.10,0.20,0.30,0.40]"}],
               [tmp_path / "x.png"], task="rec")
    same_text = Sample("b", [dict(m) for m in a.messages], [tmp_path / "y.png"], task="rec")
    other = Sample("c", [a.messages[0], {"role": "assistant", "content": "[0.1,0.2,0.3,0.4]"}], [tmp_path / "x.png"], task="rec")
    calls = []
    count = enc.token_count
    monkeypatch.setattr(enc, "token_count", lambda s: calls.append(s.id) or count(s))
    n = enc.length(a)
    real = enc.token_ids_and_labels
    assert n == len(real(a)[0]) and enc.length(same_text) == n and calls == ["a"]  # the image path plays no part
    assert enc.length(other) == len(real(other)[0]) < n and calls == ["a", "c"]


def test_sample_length_is_the_encoded_length_for_every_task_and_plain_text(tiny, tmp_path):
    from sphinx_vi.data import SampleEncoder
    from sphinx_vi.data.formats.llava import load_llava
    from sphinx_vi.data.formats.text import load_text
    from sphinx_vi.data.turns import join_turns
    from sphinx_vi.data.world.generate import synthesize

    synthesize(tmp_path / "w", 40, seed=2)
    enc = SampleEncoder(tiny.processor, max_length=4096)
    samples = [s for f in sorted((tmp_path / "w" / "llava").glob("*.json")) for s in join_turns(load_llava(f).samples, 4)]
    samples += load_text(tmp_path / "w" / "text" / "paragraphs.jsonl").samples
    assert {s.task for s in samples} >= {"rec", "keypoints", "vqa", "ocr", "chart"} and any(s.kind == "text" for s in samples)
    assert any(len(s.messages) > 2 for s in samples)  # joined conversations too
    assert [enc.token_count(s) for s in samples] == [len(enc.token_ids_and_labels(s)[0]) for s in samples]
