import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from sphinx_vi.tools import (
    DiffusersInpainter,
    EditSettings,
    GrabCutSegmenter,
    SamSegmenter,
    TeleaInpainter,
    load_inpainter,
    load_segmenter,
    run_chain,
    union_mask,
)
from sphinx_vi.tools.inpaint import fit_to_multiple_of_8
from sphinx_vi.tools.tiny_models import build_tiny_sam, save_tiny_inpaint_pipeline

PHOTO = Image.fromarray(skdata.coffee())  # 600×400 real photo shipped with scikit-image
CUP = (170, 40, 460, 300)  # the coffee cup


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)  # the format SAM's own checkpoints use
    return path


def test_sam_loads_like_real_weights_embeds_once_and_batches_boxes(sam_checkpoint, monkeypatch):
    seg = load_segmenter(sam_checkpoint, "sphinx_vi_tiny")
    assert isinstance(seg, SamSegmenter) and seg.backend == "segment-anything"
    calls = []
    original = seg.predictor.set_image
    monkeypatch.setattr(seg.predictor, "set_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    masks = seg.segment(PHOTO, [CUP, (0, 0, 100, 100)])
    assert masks.shape == (2, PHOTO.height, PHOTO.width) and masks.dtype == bool
    assert seg.segment(PHOTO, [CUP]).shape == (1, PHOTO.height, PHOTO.width)
    assert len(calls) == 1  # the same image is embedded once
    assert seg.segment(PHOTO, []).shape == (0, PHOTO.height, PHOTO.width)


def test_sam_errors_are_clear(sam_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="SAM checkpoint"):
        load_segmenter(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="does not match SAM type 'vit_b'"):
        SamSegmenter.load(sam_checkpoint, "vit_b")
    with pytest.raises(ValueError, match="unknown SAM type"):
        SamSegmenter.load(sam_checkpoint, "vit_x")


def test_grabcut_fallback_on_a_real_photo():
    seg = load_segmenter(None)
    assert isinstance(seg, GrabCutSegmenter)
    (mask,) = seg.segment(PHOTO, [CUP])
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 0.2 * (CUP[2] - CUP[0]) * (CUP[3] - CUP[1])
    assert xs.min() >= CUP[0] - 1 and xs.max() <= CUP[2] + 1 and ys.min() >= CUP[1] - 1 and ys.max() <= CUP[3] + 1
    assert seg.segment(PHOTO, []).shape == (0, 400, 600)


def test_mask_union_dilation_and_sizes():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 5:8, 5:8] = True
    masks[1, 15, 25] = True
    m = np.asarray(union_mask(masks, (30, 20), dilation=2))
    assert m[5, 5] == 255 and m[3, 5] == 255 and m[0, 0] == 0 and m[15, 25] == 255
    assert fit_to_multiple_of_8((600, 400), 512) == (512, 344)
    assert fit_to_multiple_of_8((100, 30), 512) == (96, 32)


def test_telea_removes_inside_the_mask_and_keeps_the_rest():
    mask = union_mask(GrabCutSegmenter().segment(PHOTO, [CUP]), PHOTO.size, dilation=4)
    out = TeleaInpainter().inpaint(PHOTO, mask, None, EditSettings(blur=0))
    a, b, m = np.asarray(PHOTO), np.asarray(out), np.asarray(mask) > 0
    assert out.size == PHOTO.size
    assert np.array_equal(a[~m], b[~m])
    assert np.abs(a[m].astype(int) - b[m].astype(int)).mean() > 5


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory):
    return save_tiny_inpaint_pipeline(tmp_path_factory.mktemp("diffusers"))


def test_diffusers_inpainting_from_a_local_directory(inpaint_dir):
    inp = load_inpainter(inpaint_dir)
    assert isinstance(inp, DiffusersInpainter) and inp.backend == "diffusers"
    assert inp.pipe.unet.dtype == torch.float32  # fp32 on the CPU
    image = PHOTO.resize((150, 100))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (40, 20, 100, 80))
    settings = EditSettings(steps=2, blur=0, max_side=64, seed=3)
    out = inp.inpaint(image, mask, "a red apple", settings)
    again = inp.inpaint(image, mask, "a red apple", settings)
    assert out.size == image.size  # aspect-preserving resize to multiples of 8, then pasted back
    a, b, m = np.asarray(image), np.asarray(out), np.asarray(mask) > 0
    assert np.array_equal(a[~m], b[~m]) and not np.array_equal(a[m], b[m])
    assert np.array_equal(np.asarray(again), b)  # seeded
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_inpainter(inpaint_dir.parent)


def test_chain_detect_segment_edit_with_fallbacks(tiny, monkeypatch):
    photo = PHOTO.resize((300, 200))
    monkeypatch.setattr(tiny.generator, "answer", lambda images, prompts, history, **g: ["<p>cốc</p> [0.28,0.27,0.77,0.67]"] * len(images))
    r = run_chain(tiny, photo, "cốc", GrabCutSegmenter(), TeleaInpainter(), edit="remove")
    assert [d.label for d in r.detections] == ["cốc"] and r.masks.shape == (1, 200, 300)
    assert r.backends == {"detect": "sphinx_vi", "segment": "opencv-grabcut", "inpaint": "opencv-telea"}
    assert r.edited.size == (300, 200) and set(r.timings_s) == {"detect", "segment", "inpaint"}
    r = run_chain(tiny, photo, "cốc", GrabCutSegmenter(), TeleaInpainter(), edit="replace", replace_prompt="a flower")
    assert any("cannot follow a prompt" in w for w in r.warnings)
    monkeypatch.setattr(tiny.generator, "answer", lambda images, prompts, history, **g: ["Không thấy."] * len(images))
    r = run_chain(tiny, photo, "cốc", GrabCutSegmenter(), TeleaInpainter(), edit="remove")
    assert r.detections == [] and r.masks.shape == (0, 200, 300) and np.array_equal(np.asarray(r.edited), np.asarray(photo))


def test_user_prompts_are_checked_against_the_image():
    from sphinx_vi.tools import MaskPrompt, PromptError

    w, h = PHOTO.size
    for prompt, message in ((MaskPrompt(), "nothing to segment"), (MaskPrompt(((w + 5, 10),), (1,)), "outside"),
                            (MaskPrompt(((-1, 10),), (1,)), "outside"), (MaskPrompt(((10, 10),), (0,)), "only negative"),
                            (MaskPrompt(((10, 10),), ()), "labels"), (MaskPrompt(((10, 10),), (2,)), "labels are 1"),
                            (MaskPrompt(box=(50, 50, 50, 90)), "no area"), (MaskPrompt(box=(w + 1, 0, w + 50, 40)), "no area")):
        with pytest.raises(PromptError, match=message):
            prompt.checked(w, h)
    swapped = MaskPrompt(box=(460, 300, 170, 40)).checked(w, h)
    assert swapped.box == (170.0, 40.0, 460.0, 300.0)


def test_sam_point_and_box_prompts_reuse_the_embedding_and_rank_the_candidates(sam_checkpoint, monkeypatch):
    from sphinx_vi.tools import MaskPrompt, PromptError

    seg = load_segmenter(sam_checkpoint, "sphinx_vi_tiny")
    calls = []
    original = seg.predictor.set_image
    monkeypatch.setattr(seg.predictor, "set_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    click = MaskPrompt(((310, 170), (50, 50)), (1, 0))
    choices = seg.segment_prompt(PHOTO, click)
    assert choices.masks.shape == (3, PHOTO.height, PHOTO.width) and choices.masks.dtype == bool
    assert choices.scores == sorted(choices.scores, reverse=True)  # best (highest predicted IoU) first
    one = seg.segment_prompt(PHOTO, MaskPrompt(((310, 170),), (1,), CUP), multimask=False)
    assert one.masks.shape == (1, PHOTO.height, PHOTO.width)
    seg.segment(PHOTO, [CUP])
    assert len(calls) == 1  # clicks, boxes and detections on one image share one embedding
    with pytest.raises(PromptError):
        seg.segment_prompt(PHOTO, MaskPrompt(((9999, 5),), (1,)))


def test_grabcut_stands_in_for_clicks_and_drawn_boxes_on_a_real_photo():
    from sphinx_vi.tools import MaskPrompt

    seg = GrabCutSegmenter()
    clicked = seg.segment_prompt(PHOTO, MaskPrompt(((310, 170), (40, 380)), (1, 0)))
    assert clicked.masks.shape == (1, PHOTO.height, PHOTO.width) and clicked.scores == []
    assert clicked.best[170, 310] and not clicked.best[380, 40]  # the object's click in, the background's out
    boxed = seg.segment_prompt(PHOTO, MaskPrompt(box=CUP)).best
    assert np.array_equal(boxed, seg.segment_prompt(PHOTO, MaskPrompt(box=CUP)).best)  # seeded: the same prompt, the same mask
    assert np.array_equal(seg.segment(PHOTO, [CUP]), seg.segment(PHOTO, [CUP]))
    ys, xs = np.nonzero(boxed)
    assert boxed.sum() > 0.2 * (CUP[2] - CUP[0]) * (CUP[3] - CUP[1])
    assert xs.min() >= CUP[0] and xs.max() < CUP[2] and ys.min() >= CUP[1] and ys.max() < CUP[3]  # nothing outside the box
