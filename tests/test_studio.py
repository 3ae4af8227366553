import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.studio.core import MAX_PIXELS, Studio, StudioInputError
from sphinx_vi.grounding import Detection

EXAMPLE = Path("sphinx_vi/assets/examples/shapes.png")
WORLD = Path("sphinx_vi/assets/examples/world_shapes_1.png")


@pytest.fixture(scope="module")
def studio():
    return Studio(model="tiny", ui_lang="vi")


def test_backends_are_announced(studio):
    text = studio.backends()
    assert "opencv-grabcut" in text and "không có SAM" in text and "opencv-telea" in text


def test_the_header_says_what_the_model_knows(studio, tmp_path):
    assert "ngẫu nhiên" in studio.model_card()  # the `tiny` preset: random weights
    demo = Studio.__new__(Studio)
    demo.t, demo.model_name = studio.t, "tiny-shapes"
    card = demo.model_card()
    assert "mô hình minh hoạ" in card and "python -m sphinx_vi convert" in card  # the embedded demo model, and the way out
    from sphinx_vi.factory import build_from_preset, save_checkpoint

    save_checkpoint(tmp_path / "m", *build_from_preset("tiny"))
    (tmp_path / "m" / "conversion.json").write_text('{"from": "sphinx"}')
    demo.model_name = str(tmp_path / "m")
    assert "sphinx" in demo.model_card()


@pytest.fixture(scope="module")
def demo():
    return Studio(model="tiny-shapes", ui_lang="vi")


REC_QUESTION = "Hãy cho biết tọa độ khung bao của vùng mà câu sau mô tả: hình tròn."


def test_chat_streams_token_by_token_and_draws_the_boxes_once_they_close(demo, monkeypatch):
    items = list(demo.chat_stream(str(WORLD), REC_QUESTION, []))
    texts = [text for text, _ in items]
    assert len(set(texts)) > 5  # token by token, brackets and digits included, not one block at the end
    assert all(texts[-1].startswith(t) for t in texts)
    assert texts[-1] == demo.chat(str(WORLD), REC_QUESTION, [])  # the stream ends with exactly the plain answer
    first = next(i for i, (_, drawn) in enumerate(items) if drawn is not None)
    assert texts[first].endswith("]") and all(drawn is None for _, drawn in items[:first])
    assert items[-1][1].size == Image.open(WORLD).size
    with pytest.raises(StudioInputError):
        list(demo.chat_stream(str(WORLD), "  ", []))

    def broken(*args, **kwargs):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(demo.vi, "chat", broken)
    with pytest.raises(RuntimeError, match="the model failed"):  # reported at once, the stream does not hang
        list(demo.chat_stream(str(WORLD), REC_QUESTION, []))


def test_core_actions_and_bad_input(studio, tmp_path, monkeypatch):
    monkeypatch.setattr(studio.vi.generator, "answer", lambda images, prompts, history, **g: ["<p>hình tròn</p> [0.09,0.29,0.35,0.50]"] * len(images))
    studio._cache.clear()
    out = studio.detect(str(EXAMPLE), "hình tròn")
    assert out.table[0][0] == "hình tròn" and out.annotated.size == (320, 240)
    shown, _, masks = studio.segment(str(EXAMPLE), "hình tròn")
    assert masks.shape == (1, 240, 320) and shown.size == (320, 240)
    edited, _ = studio.inpaint(str(EXAMPLE), "hình tròn", "remove")
    assert edited.size == (320, 240)
    with pytest.raises(StudioInputError, match="Hãy tải lên"):
        studio.detect(None, "x")
    with pytest.raises(StudioInputError, match="Hãy nhập"):
        studio.detect(str(EXAMPLE), "  ")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(StudioInputError, match="bad.png: not a recognised image format"):
        studio.detect(str(bad), "x")
    big = tmp_path / "big.png"
    Image.new("RGB", (2600, 2000), (200, 10, 10)).save(big)
    out = studio.detect(str(big), "x")
    assert out.image.width * out.image.height <= MAX_PIXELS and any("thu nhỏ" in n for n in out.notices)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((30, 40, 4), np.uint8)).save(rgba)
    assert studio.detect(str(rgba), "x").image.mode == "RGB"
    monkeypatch.setattr(studio.vi.generator, "answer", lambda images, prompts, history, **g: ["[[[ 0.1,"] * len(images))
    studio._cache.clear()
    out = studio.detect(str(EXAMPLE), "hình vuông")
    assert out.detections == [] and any("Không tìm thấy" in n for n in out.notices)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    # the main job's configuration: the embedded tiny-shapes checkpoint
    proc = subprocess.Popen([sys.executable, "-m", "apps.studio", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    import urllib.request

    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read()) from None
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_named_endpoints_from_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/detect", "/segment", "/inpaint", "/chat"} <= names
    annotated, _table, raw, notice = client.predict(handle_file(str(EXAMPLE)), "hình tròn", api_name="/detect")
    assert Image.open(annotated).size == (320, 240) and isinstance(raw, str)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    _, _, _, notice = client.predict(handle_file(str(bad)), "x", api_name="/detect")
    assert "bad.jpg" in notice  # a message, and the server keeps serving:
    shown, _ = client.predict(handle_file(str(EXAMPLE)), "hình tròn", api_name="/segment")
    assert Image.open(shown).size == (320, 240)
    edited, _download, _ = client.predict(handle_file(str(EXAMPLE)), "hình tròn", "xoá", "", 8, 4, 0.99, 7.5, 2, 0, api_name="/inpaint")
    assert Image.open(edited).size == (320, 240)
    history, cleared, _boxes = client.predict(handle_file(str(EXAMPLE)), "Có gì trong ảnh?", [], api_name="/chat")
    assert cleared == "" and history[-1]["role"] == "assistant"


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def test_browser_uploads_an_image_clicks_detect_and_sees_the_result(server):
    """Debian's Chromium, headless, driven by Playwright: upload → Detect → the annotated image appears."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (make test does: apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server, wait_until="networkidle")
            page.locator("#input-image input[type=file]").set_input_files(str(WORLD.resolve()))
            page.wait_for_selector("#preview img", timeout=60_000)
            page.click("#detect-btn")
            page.wait_for_selector("#annotated img", timeout=120_000)
            src = page.locator("#annotated img").first.get_attribute("src")
            assert src and ("/file=" in src or "gradio_api/file" in src or src.startswith("data:"))
            page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "studio.png").stat().st_size > 10_000


def test_click_to_segment_then_remove_changes_only_the_dilated_mask(studio, tmp_path):
    from skimage import data as skdata

    from apps.studio.selection import to_rows
    from sphinx_vi.tools import EditSettings, union_mask

    photo = tmp_path / "coffee.png"
    Image.fromarray(skdata.coffee()).save(photo)
    out = studio.segment_clicks(str(photo), [(310, 170, 1), (40, 380, 0)])
    assert out.overlay.size == (600, 400) and out.box is not None
    mask = out.choices.best
    assert mask[170, 310] and not mask[380, 40]
    rows = to_rows([Detection("cốc", out.box)])
    settings = EditSettings(dilation=6)
    edited, _ = studio.edit_rows(str(photo), rows, "remove", settings=settings)
    _, masks, _, _ = studio.segment_rows(str(photo), rows)
    grown = np.asarray(union_mask(masks, (600, 400), settings.dilation)) > 0
    changed = np.abs(np.asarray(edited, np.int16) - np.asarray(Image.open(photo).convert("RGB"), np.int16)).sum(-1) > 0
    assert changed.any() and not (changed & ~grown).any()  # the edit stays inside the dilated mask
    background, _ = studio.edit_rows(str(photo), rows, "background", "bầu trời", settings)
    moved = np.abs(np.asarray(background, np.int16) - np.asarray(Image.open(photo).convert("RGB"), np.int16)).sum(-1) > 0
    assert moved.any() and not (moved & grown & (np.asarray(union_mask(masks, (600, 400), 0)) > 0)).any()  # the object is kept


def test_the_detection_list_is_edited_by_the_user_and_bad_rows_are_named(studio):
    rows = [[True, "hình tròn", 30, 70, 110, 120], [False, "bỏ qua", 0, 0, 50, 50], [True, "sai", "a", 0, 5, 5],
            [True, "ngoài ảnh", 500, 500, 600, 600], [True, "", 200, 40, 150, 100]]
    _, masks, dets, notices = studio.segment_rows(str(EXAMPLE), rows)
    assert [d.label for d in dets] == ["hình tròn", "object"] and masks.shape == (2, 240, 320)
    assert dets[1].box == (150.0, 40.0, 200.0, 100.0)  # corners put in order
    assert any("row 3" in n for n in notices) and any("row 4" in n and "no area" in n for n in notices)
    with pytest.raises(StudioInputError, match="Chưa chọn"):
        studio.segment_rows(str(EXAMPLE), [[False, "x", 0, 0, 10, 10]])
    with pytest.raises(StudioInputError, match="Chưa chọn"):
        studio.segment_rows(str(EXAMPLE), [])
    for bad in ([], [(400, 10, 1)], [(10, 10, 0)]):  # no prompt, a click outside the image, only "not the object"
        with pytest.raises(StudioInputError):
            studio.segment_clicks(str(EXAMPLE), bad)
    each, _ = studio.edit_rows(str(EXAMPLE), rows[:1] + rows[4:], "remove", each=True)
    assert each.size == (320, 240)
    with pytest.raises(StudioInputError):
        studio.edit_rows(str(EXAMPLE), rows, "replace", "")
