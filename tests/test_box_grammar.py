"""Decoding constrained to the box grammar: inside `[`…`]` only well-formed coordinate groups, in every decoding path."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sphinx_vi.grounding import parse
from sphinx_vi.grounding.constraint import BoxGrammarConstraint
from sphinx_vi.prompts import task_prompt
from sphinx_vi.text.tokenizer import TINY_TOKENIZER, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="module")
def grammar(tok):
    return BoxGrammarConstraint(tok)


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


def _left_padded(tok, texts: list[str]) -> torch.Tensor:
    """(B, L) ids of `texts`, left-padded as a batch is for generation."""
    rows = [_ids(tok, s)[0] for s in texts]
    width = max(len(r) for r in rows)
    return torch.stack([torch.cat([r.new_full((width - len(r),), tok.pad_token_id), r]) for r in rows])


def _assert_every_token_allowed(tok, grammar, answer: str) -> None:
    """Each token of `answer`, written after a chat prompt, is allowed where it comes; every box closes."""
    prompt = _ids(tok, "[INST] x [/INST]")
    ids = torch.cat([prompt, _ids(tok, " " + answer)], dim=1)
    for j in range(prompt.shape[1], ids.shape[1]):  # every token the model would write
        assert grammar.allowed[grammar.state(ids[:, :j])[0], ids[0, j]], (answer, tok.decode(ids[0, : j + 1]))
    assert grammar.state(ids)[0] == 0


@pytest.mark.parametrize("text, inside", [
    ("[INST] Where? [/INST] ", False),
    ("[INST] Where? [/INST] [0.2", True),
    ("[INST] Where? [/INST] [0.2,0.3,0.4,0.5]", False),
    ("[INST] Where? [/INST] [0.2,0.3,0.4,0.5];[0.1", True),
    ("<p>a</p> [0.1,0.2],", False),
    ("plain text", False),
])
def test_the_state_is_the_last_bracket_spelt(tok, grammar, text, inside):
    assert bool(grammar.inside_box(_ids(tok, text))[0]) is inside


def _allowed_after(tok, grammar, text: str) -> torch.Tensor:
    """(V,) which tokens may follow `text`."""
    return grammar.allowed[grammar.state(_ids(tok, text))[0]]


@pytest.mark.parametrize("text, may, may_not", [
    ("[", ["0", "1"], ["2", ".", ",", ";", "]", "[", " [", "p", " <"]),  # a number starts with 0 or 1
    ("[0", [".", ","], ["5", "]", ";"]),  # one integer digit; one number is not a group
    ("[0.2", ["7", ","], [".", "]", ";"]),
    ("[0.47,0.2,", ["0", "1"], [",", "]"]),  # the doubled comma a trained model once wrote
    ("[0.2,0.3", ["]", "],", ";", ","], ["."]),  # a point may close, or go on to a box
    ("[0.2,0.3,0.4", [",", "5"], ["]", ";"]),  # three numbers are neither a point nor a box
    ("[0.2,0.3,0.4,0.5", ["]", ";"], [","]),  # a fifth number is not
    ("[0.1,0.2;0.3", [",", "5"], ["]", ";"]),  # a list's next group starts afresh
    ("[1.", ["0"], ["5"]),  # no value above 1
    ("[0.1234", [","], ["5"]),  # at most four decimals
])
def test_only_tokens_that_keep_the_group_well_formed_may_follow(tok, grammar, text, may, may_not):
    allowed = _allowed_after(tok, grammar, text)

    def piece(p: str) -> int:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, p
        return ids[0]

    assert all(allowed[piece(p)] for p in may), [p for p in may if not allowed[piece(p)]]
    assert not any(allowed[piece(p)] for p in may_not), [p for p in may_not if allowed[piece(p)]]
    assert not allowed[tok.all_special_ids].any()  # no EOS inside a box


@pytest.mark.parametrize("precision", [2, 3])
def test_every_answer_the_grammar_writes_is_allowed_token_by_token(tok, grammar, precision):
    from sphinx_vi.grounding import format_boxes, format_keypoints, format_phrase, format_point

    size = (640, 480)
    answers = [
        format_phrase("hình tròn", [(10, 20, 300, 200)], size, precision),
        format_phrase("quả táo", [(0, 0, 640, 480), (5.5, 6.25, 77.75, 100)], size, precision),
        "Có " + format_boxes([(10, 20, 300, 400)], size, precision) + " và " + format_point((320, 240), size, precision),
        format_keypoints({"nose": (100, 80), "left_eye": (110, 70)}, size, box=(50, 40, 200, 400), precision=precision),
    ]
    for answer in answers:
        assert parse(answer, size).detections and not parse(answer, size).warnings
        _assert_every_token_allowed(tok, grammar, answer)


def test_rows_inside_a_box_keep_only_the_tokens_that_continue_it(tok, grammar):
    ids = _left_padded(tok, ["[INST] x [/INST] [0.2,", "[INST] x [/INST] ok"])
    scores = torch.randn(2, len(tok))
    out = grammar(ids, scores.clone())
    allowed = grammar.allowed[grammar.state(ids)[0]]
    assert 0 < int(allowed.sum()) < 20  # `0` or `1`: a few tokens of the whole vocabulary
    assert torch.isinf(out[0][~allowed]).all() and torch.equal(out[0][allowed], scores[0][allowed])
    assert torch.equal(out[1], scores[1])  # outside a box nothing changes
    wider = grammar(ids, torch.randn(2, len(tok) + 7))  # padded vocabulary: the extra ids never continue a box
    assert torch.isinf(wider[0, len(tok):]).all() and torch.isfinite(wider[1]).all()


def test_the_state_kept_from_step_to_step_is_the_state_read_afresh(tok, grammar):
    texts = ["[INST] a [b] [/INST] <p>x</p> [0.1,0.2,0.3,0.4;0.5,0.6,0.7,0.8], nose[0.5,0.5] [0.2,,p] [1.00,0.3",
             "[INST] where [/INST] [0.25,0.5"]
    ids = _left_padded(tok, texts)
    width = ids.shape[1]
    scores = torch.zeros(2, len(tok))
    grammar._last = None
    for j in range(1, width + 1):  # a greedy loop: each call extends the last by one token
        stepped = grammar(ids[:, :j], scores.clone())
        fresh = grammar.state(ids[:, :j])
        assert torch.equal(grammar._last[1], fresh), tok.decode(ids[0, :j])
        assert torch.equal(torch.isfinite(stepped), grammar.allowed[fresh] | (fresh < 2)[:, None])
    swapped = grammar(ids.flip(0)[:, :-1], scores.clone())  # beams reordered: the ids no longer extend the last call
    assert torch.equal(grammar._last[1], grammar.state(ids.flip(0)[:, :-1]))
    assert torch.equal(torch.isfinite(swapped[0]), grammar.allowed[grammar.state(ids[1:, :-1])[0]])


def test_a_sentencepiece_style_tokenizer_with_multi_character_numbers():
    """Vistral's tokenizer is sentencepiece-style (`▁` for spaces); one whose merges span digits,
    dots, commas and brackets must still allow every formatted answer and refuse malformed groups."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sphinx_vi.grounding import format_phrase

    rng = random.Random(0)
    size = (640, 480)

    def answer() -> str:
        boxes = [sorted(rng.sample(range(640), 2)) + sorted(rng.sample(range(480), 2)) for _ in range(rng.randint(1, 2))]
        return format_phrase(rng.choice(["hình tròn", "quả táo", "người"]), [(b[0], b[2], b[1], b[3]) for b in boxes], size)

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    raw.train_from_iterator([answer() for _ in range(300)] + ["[INST] x [/INST]"] * 10,
                            trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    grammar = BoxGrammarConstraint(tok)
    merged = [tok.decode([i]) for i in range(len(tok)) if len(tok.decode([i])) > 2 and set(tok.decode([i])) <= set("0123456789.,;")]
    assert merged, "the test needs merges across coordinate characters"

    for _ in range(30):
        _assert_every_token_allowed(tok, grammar, answer())
    three = grammar.allowed[grammar.state(_ids(tok, "[0.20,0.30,0.40"))[0]]
    for piece, ok in (("]", False), (",", True), ("0", True)):
        assert bool(three[tok.convert_tokens_to_ids(piece)]) is ok, piece


def test_a_tokenizer_that_cannot_write_coordinates_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[": 2, "<unk>": 3}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="cannot spell a coordinate group"):
        BoxGrammarConstraint(PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>"))


class PushLettersIntoBoxes(LogitsProcessor):
    """A drifting model: once a box is open, the letter `p` scores far above everything."""

    def __init__(self, grammar: BoxGrammarConstraint, letter: int) -> None:
        self.grammar, self.letter = grammar, letter

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[self.grammar.inside_box(input_ids), self.letter] += 1e4
        return scores


def test_a_drifting_box_is_kept_readable_on_every_decoding_path(shapes_model, world_image):
    vi = shapes_model
    tok = vi.processor.tokenizer
    drift = PushLettersIntoBoxes(vi.box_grammar, tok.convert_tokens_to_ids("p"))
    prompt = task_prompt("rec", "vi", expression="hình tròn màu đỏ")

    free = vi.ask(world_image, prompt, logits_processor=[drift], constrain_boxes=False)
    assert "[p" in free.text and not free.detections  # what the constraint is for

    kept = vi.ask(world_image, prompt, logits_processor=[drift])  # lean greedy loop
    assert "p" not in kept.text.split("[", 1)[1].split("]", 1)[0]
    assert len(kept.detections) == 1 and kept.detections[0].box is not None
    beams = vi.ask(world_image, prompt, logits_processor=[drift], num_beams=2)  # transformers' generate
    assert beams.detections and beams.detections[0].box is not None
    vi._session = None
    chat = vi.chat(world_image, prompt, [], logits_processor=[drift])  # cached chat session
    assert chat == kept.text


def test_lean_loop_and_transformers_agree_with_the_constraint(shapes_model, world_image):
    vi = shapes_model
    texts = [vi.processor.apply_chat_template([{"role": "user", "content": f"<image>\n{p}"}])
             for p in (task_prompt("rec", "vi", expression="hình vuông màu xanh lá"), task_prompt("detect", "en", category="circles"))]
    inputs = vi.processor(texts, [world_image, world_image])
    kwargs = vi.generator.options(max_new_tokens=40)
    assert isinstance(kwargs["logits_processor"], LogitsProcessorList) and kwargs["logits_processor"][-1] is vi.box_grammar
    with torch.inference_mode():
        lean = vi.model.generate(**inputs, **kwargs)
        hf = vi.model.generate(**inputs, **kwargs, output_scores=False)  # an option only transformers handles
    assert torch.equal(lean, hf)
    rec_answer = vi.processor.tokenizer.decode(lean[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(parse(rec_answer, (128, 128)).boxes) == 1 and not parse(rec_answer, (128, 128)).warnings, rec_answer
