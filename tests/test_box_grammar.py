"""Decoding constrained to the box grammar: inside `[`…`]` only coordinates, in every decoding path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sphinx_vi import SphinxVi
from sphinx_vi.grounding import parse
from sphinx_vi.grounding.constraint import BoxGrammarConstraint
from sphinx_vi.prompts import task_prompt
from sphinx_vi.text.tokenizer import TINY_TOKENIZER, load_tokenizer

WORLD_IMAGE = Path(__file__).resolve().parents[1] / "sphinx_vi" / "assets" / "examples" / "world_shapes_1.png"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="module")
def grammar(tok):
    return BoxGrammarConstraint(tok)


@pytest.fixture(scope="module")
def shapes_model():
    torch.set_num_threads(2)
    return SphinxVi.from_pretrained("tiny-shapes")


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


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


def test_only_coordinate_tokens_may_follow_an_open_bracket(tok, grammar):
    def allowed(piece: str) -> bool:
        ids = tok(piece, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, piece
        return bool(grammar.allowed[ids[0]])

    for piece in ("0", "5", ".", ",", ";", "]", "],", "]."):
        assert allowed(piece), piece
    for piece in ("[", " [", "p", " <"):
        assert not allowed(piece), piece
    assert not grammar.allowed[tok.all_special_ids].any()  # no EOS inside a box


def test_rows_inside_a_box_keep_only_coordinate_tokens(tok, grammar):
    rows = [_ids(tok, "[INST] x [/INST] [0.2")[0], _ids(tok, "[INST] x [/INST] ok")[0]]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([r.new_full((width - len(r),), tok.pad_token_id), r]) for r in rows])  # left-padded
    scores = torch.randn(2, len(tok))
    out = grammar(ids, scores.clone())
    assert torch.isinf(out[0][~grammar.allowed]).all() and torch.equal(out[0][grammar.allowed], scores[0][grammar.allowed])
    assert torch.equal(out[1], scores[1])  # outside a box nothing changes
    wider = grammar(ids, torch.randn(2, len(tok) + 7))  # padded vocabulary: the extra ids never continue a box
    assert torch.isinf(wider[0, len(tok):]).all()


def test_a_tokenizer_that_cannot_write_coordinates_is_refused():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

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


def test_a_drifting_box_is_kept_readable_on_every_decoding_path(shapes_model):
    vi = shapes_model
    tok = vi.processor.tokenizer
    drift = PushLettersIntoBoxes(vi.box_grammar, tok.convert_tokens_to_ids("p"))
    prompt = task_prompt("rec", "vi", expression="hình tròn màu đỏ")

    free = vi.ask(WORLD_IMAGE, prompt, logits_processor=[drift], constrain_boxes=False)
    assert "[p" in free.text and not free.detections  # what the constraint is for

    kept = vi.ask(WORLD_IMAGE, prompt, logits_processor=[drift])  # lean greedy loop
    assert "p" not in kept.text.split("[", 1)[1].split("]", 1)[0]
    assert len(kept.detections) == 1 and kept.detections[0].box is not None
    beams = vi.ask(WORLD_IMAGE, prompt, logits_processor=[drift], num_beams=2)  # transformers' generate
    assert beams.detections and beams.detections[0].box is not None
    vi._session = None
    chat = vi.chat(WORLD_IMAGE, prompt, [], logits_processor=[drift])  # cached chat session
    assert chat == kept.text


def test_lean_loop_and_transformers_agree_with_the_constraint(shapes_model):
    vi = shapes_model
    texts = [vi.processor.apply_chat_template([{"role": "user", "content": f"<image>\n{p}"}])
             for p in (task_prompt("rec", "vi", expression="hình vuông màu xanh lá"), task_prompt("detect", "en", category="circles"))]
    inputs = vi.processor(texts, [WORLD_IMAGE, WORLD_IMAGE])
    kwargs = vi.generation_kwargs(max_new_tokens=40)
    assert isinstance(kwargs["logits_processor"], LogitsProcessorList) and kwargs["logits_processor"][-1] is vi.box_grammar
    with torch.inference_mode():
        lean = vi.model.generate(**inputs, **kwargs)
        hf = vi.model.generate(**inputs, **kwargs, output_scores=False)  # an option only transformers handles
    assert torch.equal(lean, hf)
    rec_answer = vi.processor.tokenizer.decode(lean[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(parse(rec_answer, (128, 128)).boxes) == 1 and not parse(rec_answer, (128, 128)).warnings, rec_answer
