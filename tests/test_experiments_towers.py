"""Stage 0 (sphinx_vi.experiments.towers): dense labels per grid token, and the command that trains the towers."""

import pytest
import torch

from sphinx_vi import SphinxVi


def test_stage0_towers_learn_colours_and_start_later_stages(tmp_path):
    import json

    from sphinx_vi.experiments.towers import main
    from sphinx_vi.train.lineage import read_lineage

    assert main(["--model", "tiny", "--out", str(tmp_path / "s0"), "--max-steps", "40", "--batch-size", "4"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "s0" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[-1]["loss"] < rows[0]["loss"]
    assert read_lineage(tmp_path / "s0")["base"]  # a base both stage-1 runs can share
    vi = SphinxVi.from_pretrained(tmp_path / "s0")
    fresh = SphinxVi.from_preset("tiny", seed=0)
    changed = [n for n, p in vi.model.vision.encoders.named_parameters()
               if not torch.equal(p, dict(fresh.model.vision.encoders.named_parameters())[n])]
    assert changed  # the towers were trained
    torch.testing.assert_close(vi.model.language_model.state_dict()["lm_head.weight"],
                               fresh.model.language_model.state_dict()["lm_head.weight"])  # the LLM was not
    assert main(["--model", "tiny", "--out", str(tmp_path / "again"), "--max-steps", "40", "--batch-size", "4"]) == 0
    again = [json.loads(x) for x in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert again == rows  # one command, one result: the probes' init and dropout are seeded too


def test_stage0_keeps_a_subset_of_the_towers_or_another_view_grid(tmp_path):
    from sphinx_vi.experiments.towers import TowerPretrainConfig, preset_variant, pretrain_towers

    config = preset_variant("tiny-shapes", towers=("clip_vit",), views_grid=2)
    assert [e.backend for e in config.vision_config.encoders] == ["clip_vit"] and config.vision_config.views_grid == 2
    out = pretrain_towers(TowerPretrainConfig(model="tiny-shapes", steps=1, batch_size=2, towers=("clip_convnext",)), tmp_path / "s0")
    vi = SphinxVi.from_pretrained(out)
    assert [e.backend for e in vi.model.config.vision_config.encoders] == ["clip_convnext"]
    with pytest.raises(ValueError, match="no encoder among"):
        preset_variant("tiny-shapes", towers=("dinov2",))


def test_stage0_box_digits_spell_the_grammar_in_each_view_frame():
    from sphinx_vi.experiments.towers import box_digits
    from sphinx_vi.grounding.grammar import format_box

    box = (13.0, 40.7, 77.2, 127.9)
    spelt = format_box(box, (128, 128))[1:-1].replace("1.00", "0.99").split(",")
    assert box_digits(box, 128, (0.0, 0.0, 1.0)) == [int(d) for s in spelt for d in s[2:4]]
    # top-right crop of a 2×2 grid: x from 0.5 to 1 of the image; boxes outside the crop clamp
    assert box_digits((80.0, 0.0, 112.0, 64.0), 128, (0.5, 0.0, 0.5)) == [2, 5, 0, 0, 7, 5, 9, 9]
    assert box_digits((0.0, 0.0, 32.0, 32.0), 128, (0.5, 0.5, 0.5)) == [0] * 8


def test_stage0_cell_digits_follow_the_covering_shape_and_skip_background():
    from sphinx_vi.experiments.towers import cell_box_digits

    instances = torch.zeros(1, 8, 8, dtype=torch.long)
    instances[0, :4, :4] = 1  # shape 1 covers the top-left 2×2 cells of a 4×4 grid
    instances[0, 4:, 6:] = 2  # shape 2 covers half of each of two bottom-right cells
    table = torch.zeros(1, 3, 8, dtype=torch.long)
    table[0, 1], table[0, 2] = torch.arange(8), torch.arange(8) + 1
    cells = cell_box_digits(instances, table, grid=4)  # (1, 16, 8)
    assert cells.shape == (1, 16, 8)
    assert torch.equal(cells[0, 0], torch.arange(8)) and torch.equal(cells[0, 5], torch.arange(8))
    assert torch.equal(cells[0, 11], torch.arange(8) + 1) and torch.equal(cells[0, 15], torch.arange(8) + 1)
    assert (cells[0, [2, 3, 8, 10]] == -100).all()  # background cells carry no box


def test_stage0_people_scenes_label_figures_and_keypoints():
    import random

    from sphinx_vi.data.world.shapes import WorldConfig
    from sphinx_vi.experiments.towers import PERSON_KIND, scene_batch
    from sphinx_vi.views import ViewConfig

    views = ViewConfig(grid=2, resolution=64)
    scenes = scene_batch(random.Random(3), 2, WorldConfig(), views, (0, 0, 0), grid=8, people_rate=1.0)
    V = views.num_views
    assert scenes.pixels.shape == (2 * V, 3, 64, 64) and scenes.keypoint.shape == (2 * V, 64)
    person = scenes.instance > 0
    assert person.any() and set(scenes.kind[person].unique().tolist()) == {PERSON_KIND}
    assert (scenes.kind[~person] == 0).all() and (scenes.colour == 0).all()
    dark = scenes.pixels.mean(1) < 0.75  # figures are drawn in dark colours on a light background
    assert dark[person].float().mean() > 0.5
    labelled = scenes.keypoint > 0
    assert labelled[::V].sum() >= 5  # the global view sees most visible keypoints
    assert ((scenes.keypoint_digits >= 0).all(-1) == labelled).all()  # digits exactly where a keypoint is
    assert scenes.keypoint.max() <= 17


def test_stage0_draws_the_same_scenes_in_its_background_process_as_inline():
    from dataclasses import fields

    from sphinx_vi.data.world.shapes import WorldConfig
    from sphinx_vi.experiments.towers import SceneStream, scene_batches
    from sphinx_vi.views import ViewConfig

    stream = SceneStream(seed=5, steps=3, n=2, world=WorldConfig(), views=ViewConfig(grid=1, resolution=64),
                         fill=(0, 0, 0), grid=8, people_rate=0.5)
    inline, drawn = list(scene_batches(stream, 0)), list(scene_batches(stream, 1))
    assert len(inline) == len(drawn) == 3
    for a, b in zip(inline, drawn):
        assert all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    assert not torch.equal(inline[0].pixels, inline[1].pixels)  # batches differ from step to step
    with pytest.raises(ValueError, match="background process"):
        scene_batches(stream, 2)
