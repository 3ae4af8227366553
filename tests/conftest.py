import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)
# Subprocesses (training runs, servers) take one thread too: `pytest -n 2` already runs two workers on the two
# cores, and an oversubscribed subprocess ran the emulated-bf16 training test 5x slower than alone.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny():
    from sphinx_vi import SphinxVi

    return SphinxVi.from_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_config():
    from sphinx_vi import SphinxViConfig
    from sphinx_vi.presets import preset_config_dict

    return SphinxViConfig(**preset_config_dict("tiny"))


@pytest.fixture(scope="session")
def shapes_model():
    """The embedded tiny-shapes checkpoint (trained: it writes boxes)."""
    from sphinx_vi import SphinxVi

    torch.set_num_threads(2)
    return SphinxVi.from_pretrained("tiny-shapes")


@pytest.fixture(scope="session")
def train_world(tmp_path_factory) -> Path:
    """A small synthetic world for training runs: 40 images of 64 px, seed 0."""
    from sphinx_vi.data.world.generate import synthesize
    from sphinx_vi.data.world.shapes import WorldConfig

    out = tmp_path_factory.mktemp("train_world")
    synthesize(out, 40, seed=0, config=WorldConfig(size=64), progress=False)
    return out


@pytest.fixture(scope="session")
def world_image() -> Path:
    """A synthetic-world scene shipped with the package."""
    return Path(__file__).resolve().parents[1] / "sphinx_vi" / "assets" / "examples" / "world_shapes_1.png"


@pytest.fixture
def chat(tmp_path):
    """chat(question, answer, task="rec") → a one-turn Sample about a blank 64 px scene."""
    from PIL import Image

    from sphinx_vi.data import Sample

    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 64), (240, 240, 240)).save(path)

    def make(question: str, answer: str, task: str = "rec") -> Sample:
        messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": answer}]
        return Sample(task, messages, [path], task=task)

    return make


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """save(directory) → vocab size: a LLaVA-style tokenizer (BPE, <unk> <s> </s>, no `<image>`, no chat template)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = ["describe the image", "what is this", "a red circle", "mô tả bức ảnh", "USER ASSISTANT", "[INST] [/INST]"]
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>", "x", "y", "z"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(words * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")

    def save(directory) -> int:
        fast.save_pretrained(directory)
        return len(fast)

    return save
