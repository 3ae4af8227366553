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
    rows = {"headers": ["use", "label", "x1", "y1", "x2", "y2"], "data": [[True, "hình tròn", 30, 70, 110, 120]]}
    shown, _ = client.predict(handle_file(str(EXAMPLE)), rows, api_name="/segment")
    assert Image.open(shown).size == (320, 240)
    edited, _download, _ = client.predict(handle_file(str(EXAMPLE)), rows, "xoá", "", False, 8, 4, 0.99, 7.5, 2, 0, api_name="/inpaint")
    assert Image.open(edited).size == (320, 240)
    nothing = {"headers": rows["headers"], "data": [[False, "hình tròn", 30, 70, 110, 120]]}
    _, notice = client.predict(handle_file(str(EXAMPLE)), nothing, api_name="/segment")
    assert "Chưa chọn" in notice  # an empty selection: a message, the server keeps serving
    history, cleared, _boxes = client.predict(handle_file(str(EXAMPLE)), "Có gì trong ảnh?", [], api_name="/chat")
    assert cleared == "" and history[-1]["role"] == "assistant"


CHROMIUM = "/usr/bin/chromium"
# headless and quiet: no background network traffic, or "networkidle" never comes
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def test_browser_uploads_an_image_clicks_detect_and_sees_the_result(server):
    """Debian's Chromium, headless, driven by Playwright: upload → Detect → the annotated image appears."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (make test does: apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server, wait_until="load")  # not networkidle: the session heartbeat (gr.State) stays open
            page.wait_for_selector("#model-card", timeout=60_000)
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
    _, listed, _, _ = studio.segment_rows(str(photo), rows)
    assert np.array_equal(listed[0], mask)  # the listed click keeps the mask the click gave
    moved = [[True, "cốc", out.box[0], out.box[1], out.box[2] - 20, out.box[3]]]
    _, resegmented, _, _ = studio.segment_rows(str(photo), moved)
    assert not np.array_equal(resegmented[0], mask)  # a box the user changed is segmented anew
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


def _fetch_image(page, selector: str) -> Image.Image:
    """The picture an <img> shows, fetched through the page (a served file or a data URL)."""
    import base64
    import io

    src = page.locator(selector).first.get_attribute("src")
    assert src
    if src.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
    return Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")


def _click_at(page, selector: str, x: float, y: float, natural: tuple[int, int]) -> None:
    """Click the pixel (x, y) of an image shown scaled (object-fit: contain) inside its <img> box."""
    page.locator(selector).first.scroll_into_view_if_needed()  # mouse clicks are in viewport coordinates
    box = page.locator(selector).first.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + x * scale, top + y * scale)


def test_browser_click_a_point_on_a_real_photo_remove_it_and_draw_a_box(server, tmp_path):
    """Click a point on a real photo → its mask → Add → Edit (remove): the edit stays inside the dilated mask of the
    listed box; then two box corners → a mask; the demo-model notice is on the page. Screenshots for reports/studio."""
    from playwright.sync_api import sync_playwright
    from skimage import data as skdata

    photo = tmp_path / "coffee.png"
    original = Image.fromarray(skdata.coffee())  # 600×400
    original.save(photo)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(server, wait_until="load")  # not networkidle: the session heartbeat (gr.State) stays open
            page.wait_for_selector("#model-card", timeout=60_000)
            assert "mô hình minh hoạ" in page.locator("#model-card").inner_text()  # the demo model says what it is
            page.locator("#input-image input[type=file]").set_input_files(str(photo))
            page.wait_for_selector("#preview img", timeout=60_000)
            before = page.locator("#preview img").first.get_attribute("src")
            _click_at(page, "#preview img", 310, 170, original.size)  # the coffee cup
            page.wait_for_function(f"document.querySelector('#preview img').getAttribute('src') !== {before!r}", timeout=120_000)
            shown = _fetch_image(page, "#preview img")
            assert shown.size == original.size
            tinted = np.abs(np.asarray(shown, np.int16) - np.asarray(original, np.int16)).sum(-1) > 30
            assert tinted[170, 310] and tinted.sum() > 2_000  # the clicked object's mask is drawn
            page.screenshot(path=str(ARTIFACTS / "studio_click.png"), full_page=True)

            page.fill("#new-label textarea, #new-label input", "cốc cà phê")
            page.click("#add-btn")
            page.wait_for_function("document.querySelector('#det-list').innerText.includes('cốc cà phê')", timeout=60_000)
            after_label = page.locator("#det-list").inner_text().split("cốc cà phê", 1)[1].split()
            x1, y1, x2, y2 = (float(v) for v in after_label[:4])  # the new row: label, then its box
            assert x1 < 310 < x2 and y1 < 170 < y2

            page.locator("#edit-panel").get_by_text("Chỉnh sửa").first.click()  # open the panel (remove is the default mode)
            page.click("#edit-btn")
            page.wait_for_selector("#edited img", timeout=120_000)
            edited = _fetch_image(page, "#edited img")
            changed = np.abs(np.asarray(edited, np.int16) - np.asarray(original, np.int16)).sum(-1) > 0
            grown = np.zeros(changed.shape, bool)  # the mask lies inside the listed box; dilation 8 (the default)
            grown[max(0, int(y1) - 9) : int(y2) + 10, max(0, int(x1) - 9) : int(x2) + 10] = True
            assert changed.any() and not (changed & ~grown).any()
            page.screenshot(path=str(ARTIFACTS / "studio_remove.png"), full_page=True)

            clicked = page.locator("#preview img").first.get_attribute("src")
            page.click("#reset-btn")  # the clicks are forgotten, the plain photo is shown again
            page.wait_for_function(f"document.querySelector('#preview img').getAttribute('src') !== {clicked!r}", timeout=60_000)
            page.get_by_label("góc hộp").check()
            before = page.locator("#preview img").first.get_attribute("src")
            _click_at(page, "#preview img", 170, 40, original.size)  # two corners around the cup; the first is marked
            page.wait_for_function(f"document.querySelector('#preview img').getAttribute('src') !== {before!r}", timeout=120_000)
            marked = page.locator("#preview img").first.get_attribute("src")
            corner = np.abs(np.asarray(_fetch_image(page, "#preview img"), np.int16) - np.asarray(original, np.int16)).sum(-1) > 30
            assert corner[40, 170] and corner.sum() < 500  # a small cross at the first corner, no mask yet
            _click_at(page, "#preview img", 460, 300, original.size)
            page.wait_for_function(f"document.querySelector('#preview img').getAttribute('src') !== {marked!r}", timeout=120_000)
            boxed = _fetch_image(page, "#preview img")
            moved = np.abs(np.asarray(boxed, np.int16) - np.asarray(original, np.int16)).sum(-1) > 30
            inside = np.zeros(moved.shape, bool)
            inside[36:305, 166:465] = True  # the box, its 2-pixel outline included
            assert moved[60:280, 200:430].sum() > 5_000 and not (moved & ~inside).any()  # a mask drawn inside the box only
            page.screenshot(path=str(ARTIFACTS / "studio_box.png"), full_page=True)
        finally:
            browser.close()


def test_every_demo_example_is_one_the_demo_model_answers_right(demo):
    from apps.studio.examples import CHECK_IOU, demo_examples, matches

    examples = demo_examples()
    assert len(examples) >= 3 and len({e.query for e in examples}) == len(examples)
    for e in examples:
        out = demo.detect(str(e.image), e.query)  # exactly what the studio's Detect button does
        found = [d.box for d in out.detections if d.box is not None]
        assert matches(found, e.boxes, CHECK_IOU), (e.image.name, e.query, found, e.boxes)


def test_the_category_of_a_detection_question_inverts_its_template():
    from apps.studio.examples import category_of
    from sphinx_vi.prompts import task_prompt

    for lang, category in (("vi", "hình tròn"), ("en", "red square")):
        assert category_of(task_prompt("detect", lang, category=category), lang) == category
    assert category_of("Có gì trong ảnh?", "vi") is None
