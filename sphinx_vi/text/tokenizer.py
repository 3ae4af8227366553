"""Tokenizers: the tiny project-trained one, and loading a real one (Vistral) by path or hub id.

The tiny tokenizer is a byte-level BPE trained with `tokenizers` on Vietnamese + English text.
Like Mistral's SentencePiece model it splits digits into single tokens, so coordinates are spelled
digit by digit in both; byte-level BPE makes every string (any diacritic) round-trip exactly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .corpus import training_corpus
from .templates import VISTRAL, MissingChatTemplateError, get_template
from .tokens import IMAGE_TOKEN

TINY_TOKENIZER = "builtin:tiny"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
TINY_VOCAB_SIZE = 3000  # enough for common Vietnamese syllables; the tiny LLM's embedding stays small

# The tiny tokenizer's template: Vistral-7B-Chat's Llama-2 style (`templates.VISTRAL`).
CHAT_TEMPLATE = VISTRAL.jinja


def train_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the tiny tokenizer from the shipped corpus (deterministic)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()  # one code point per Vietnamese letter, as typed text usually is
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_tokenizer_dir() -> Path:
    return Path(str(resources.files("sphinx_vi.assets").joinpath("tokenizer")))


def load_tokenizer(ref: str, *, allow_download: bool = False, template: str | None = None) -> PreTrainedTokenizerBase:
    """`builtin:tiny`, a local directory, or (with `allow_download`) a hub id; `<image>` is ensured.

    `template` names the chat template to use (`text.templates`); without one the tokenizer must
    bring its own, else `MissingChatTemplateError` (never a silent substitute).
    """
    path = tiny_tokenizer_dir() if ref == TINY_TOKENIZER else Path(ref).expanduser()
    if not path.exists() and not allow_download:
        raise FileNotFoundError(
            f"tokenizer {ref!r} is not a local directory; pass allow_download=True to fetch it from the hub"
        )
    tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else ref, local_files_only=not allow_download)
    ensure_image_token(tok)
    if template is not None:
        tok.chat_template = get_template(template).jinja
    elif tok.chat_template is None:
        raise MissingChatTemplateError(
            f"tokenizer {ref!r} has no chat template and the model config names none; set `chat_template` in the "
            "config to the format the checkpoint was trained with (vistral, vistral_v, vicuna_v1, sphinx)"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def ensure_image_token(tok: PreTrainedTokenizerBase) -> int:
    """Add `<image>` as a special token if the tokenizer lacks it; returns its id."""
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return int(tok.convert_tokens_to_ids(IMAGE_TOKEN))  # type: ignore[arg-type]  # one token → one id


def main() -> None:
    """Rebuild the shipped tiny tokenizer: `python -m sphinx_vi.text.tokenizer`."""
    out = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
    train_tiny_tokenizer().save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
