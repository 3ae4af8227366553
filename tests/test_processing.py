"""The processor: `<image>` expanded to the layout's token count, loaded images used as they are, settings from config.json."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sphinx_vi import SphinxVi
from sphinx_vi.images import load_image
from sphinx_vi.processing import PROCESSOR_CONFIG, SphinxViProcessor


def _inputs(tiny, n_images=1, prompt="<image>\nMô tả bức ảnh."):
    images = [torch.randint(0, 255, (24 + 8 * i, 40, 3), dtype=torch.uint8).numpy() for i in range(n_images)]
    text = tiny.processor.apply_chat_template([{"role": "user", "content": prompt}])
    return tiny.processor(text, images)


def test_processor_expands_each_image_into_the_models_token_count(tiny):
    inputs = _inputs(tiny)
    n = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert n == tiny.model.config.layout.tokens_per_image == tiny.model.vision.layout.tokens_per_view * 5 == 115
    assert inputs["pixel_values"].shape == (1, 5, 3, 32, 32)
    assert "image_sizes" not in inputs  # sizes live with the loaded images; the model does not take them


def test_an_image_is_decoded_once_per_call(tiny, world_image, monkeypatch):
    """The API loads each image once; the processor, the parser and the tool chain reuse the loaded image."""
    from sphinx_vi.tools import GrabCutSegmenter, run_chain

    opened = {"n": 0}
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened["n"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    tiny.ask(world_image, "Có gì?", max_new_tokens=2)
    assert opened["n"] == 1
    opened["n"] = 0
    run_chain(tiny, world_image, "hình tròn", GrabCutSegmenter())
    assert opened["n"] == 1
    loaded = load_image(world_image)
    assert load_image(loaded) is loaded  # loading a loaded image is free
    rotated = Image.new("RGB", (4, 2))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise": a PIL image with EXIF orientation is still turned upright
    rotated.info["exif"] = exif.tobytes()
    assert load_image(Image.open(_saved(rotated, exif))).size == (2, 4)


def _saved(image, exif):
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    buf.seek(0)
    return buf


def test_views_of_a_loaded_image_equal_those_of_its_file(tiny, world_image):
    loaded = tiny.processor.load(world_image)
    torch.testing.assert_close(tiny.processor.image_to_views(loaded), tiny.processor.image_to_views(world_image))
    arr = np.asarray(loaded)
    torch.testing.assert_close(tiny.processor.image_to_views(arr), tiny.processor.image_to_views(loaded))


def test_saved_settings_are_only_what_the_model_config_does_not_say(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / PROCESSOR_CONFIG).read_text())
    assert saved == {"max_pixels": tiny.processor.settings.max_pixels}
    again = SphinxViProcessor.from_pretrained(tmp_path / "m")
    assert again.settings == tiny.processor.settings and again.settings.layout == tiny.model.config.layout

    # checkpoints written before the layout moved to config.json carry the derived keys: checked, then ignored
    layout = tiny.model.config.layout
    old = {"views_grid": layout.views.grid, "resolution": layout.views.resolution, "tokens_per_image": layout.tokens_per_image,
           "pad_colour": list(tiny.processor.settings.pad_colour), "context_length": tiny.processor.settings.context_length,
           "max_pixels": 1000}
    (tmp_path / "m" / PROCESSOR_CONFIG).write_text(json.dumps(old))
    assert SphinxViProcessor.from_pretrained(tmp_path / "m").settings.max_pixels == 1000
    (tmp_path / "m" / PROCESSOR_CONFIG).write_text(json.dumps({**old, "tokens_per_image": 7}))
    with pytest.raises(ValueError, match="tokens_per_image = 7 disagrees with config.json"):
        SphinxViProcessor.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / PROCESSOR_CONFIG).write_text(json.dumps({"max_pixel": 5}))
    with pytest.raises(ValueError, match="unknown setting 'max_pixel'"):
        SphinxViProcessor.from_pretrained(tmp_path / "m")


def test_the_embedded_checkpoint_loads_with_its_settings():
    vi = SphinxVi.from_pretrained("tiny-shapes")
    assert vi.processor.settings.tokens_per_image == vi.model.config.layout.tokens_per_image == 67
