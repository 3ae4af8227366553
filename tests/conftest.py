import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


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
