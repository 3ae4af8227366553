import pytest

from sphinx_vi.text.tokenizer import IMAGE_TOKEN, TINY_TOKENIZER, load_tokenizer, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER)


@pytest.mark.parametrize(
    "text",
    [
        "Người đàn ông đứng cạnh chiếc xe đạp.",
        "Tiếng Việt có sáu thanh: ngang, huyền, sắc, hỏi, ngã, nặng. Ỹ ỵ Đ đ",
        "<p>hình tròn màu đỏ</p> [0.45,0.20,0.63,0.74]",
        "emoji 😀 and 中文 survive too",
    ],
)
def test_diacritics_round_trip(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_digits_are_single_tokens(tok):
    pieces = tok.convert_ids_to_tokens(tok("[0.45,0.20,0.63,0.74] 2026")["input_ids"])
    digits = [p.lstrip("Ġ") for p in pieces if any(c.isdigit() for c in p)]
    assert digits and all(len(d) == 1 for d in digits)


def test_special_tokens_and_image_token(tok):
    ids = tok(f"{IMAGE_TOKEN}{IMAGE_TOKEN}x")["input_ids"]
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert ids[:2] == [image_id, image_id]
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"


def test_chat_template_is_vistral_style_with_an_assistant_mask(tok):
    msgs = [
        {"role": "system", "content": "Bạn là trợ lý."},
        {"role": "user", "content": "Xin chào"},
        {"role": "assistant", "content": "Chào bạn"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<s>[INST] <<SYS>>\nBạn là trợ lý.\n<</SYS>>\n\nXin chào [/INST] Chào bạn</s>"
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(answer).strip() == "Chào bạn</s>"


def test_shipped_tokenizer_is_what_training_produces(tok):
    fresh = train_tiny_tokenizer()
    assert fresh.get_vocab() == tok.get_vocab()
