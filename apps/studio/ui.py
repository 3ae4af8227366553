"""The Gradio studio: named endpoints /detect, /segment, /inpaint, /chat over `Studio`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from sphinx_vi.grounding import Detection
from sphinx_vi.tools import EditSettings

from .core import Studio, StudioInputError
from .examples import DEMO_MODEL, demo_examples, photos
from .selection import HEADERS, append_row, to_rows

# the click prompt of the shown image, and the box of the mask it gave (what "Add to the list" adds)
NO_CLICKS: dict = {"points": [], "box": None, "corner": None, "found": None}


def _text(message: dict) -> str:
    """A Chatbot message's text (Gradio 6 stores content as a list of typed parts)."""
    content = message.get("content", "")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def build_ui(studio: Studio) -> gr.Blocks:
    t = studio.t
    shown_photos = photos(Path(tempfile.gettempdir()) / "sphinx_vi_studio_examples")
    trained_for = demo_examples() if studio.model_name == DEMO_MODEL else []  # what only the demo model is known to answer

    def show_preview(image):
        if not image:
            return None, "", dict(NO_CLICKS)
        try:
            img, notices = studio.load(image)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, str(err), dict(NO_CLICKS)
        return img, "\n\n".join(notices), dict(NO_CLICKS)

    def detect(image, query):
        try:
            out = studio.detect(image, query)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, gr.update(), "", str(err)
        return out.annotated, to_rows(out.detections), out.answer, "\n\n".join(out.notices)

    def click(image, clicks, kind, choice, evt: gr.SelectData):
        """One click on the preview: a point (on / not on the object) or a box corner; the mask follows at once."""
        x, y = (float(v) for v in evt.index)
        clicks = {**clicks, "points": list(clicks["points"])}
        if kind == t["corner"]:
            if clicks["corner"] is None:
                clicks["corner"], clicks["box"] = (x, y), None
            else:
                (cx, cy), clicks["corner"] = clicks["corner"], None
                clicks["box"] = (min(cx, x), min(cy, y), max(cx, x), max(cy, y))
        else:
            clicks["points"].append((x, y, 1 if kind == t["positive"] else 0))
        return segment_clicks(image, clicks, choice)

    def segment_clicks(image, clicks, choice):
        """The mask of the current clicks (candidate `choice`): shown on the preview, its box kept for the list."""
        clicks = {**clicks, "found": None}
        try:
            if not clicks["points"] and clicks["box"] is None:  # nothing to segment yet; a first box corner is marked
                if clicks["corner"] is None:
                    return gr.update(), t["click_help"], clicks, gr.update()
                return studio.mark_corner(image, clicks["corner"]), t["corner_help"], clicks, gr.update()
            out = studio.segment_clicks(image, clicks["points"], clicks["box"], int(choice or 1) - 1, clicks["corner"])
        except StudioInputError as err:
            gr.Warning(str(err))
            return gr.update(), str(err), clicks, gr.update()
        clicks["found"] = out.box
        scores = out.choices.scores  # SAM's predicted IoU per candidate; GrabCut gives one unscored mask
        labels = [f"{i + 1} (IoU≈{sc:.2f})" for i, sc in enumerate(scores)] if scores else ["1"]
        return (out.overlay, "\n\n".join(out.notices), clicks,
                gr.update(choices=[(lab, str(i + 1)) for i, lab in enumerate(labels)]))

    def add_clicked(clicks, label, rows):
        if clicks["found"] is None:
            gr.Warning(t["empty_mask"] if clicks["points"] or clicks["box"] else t["click_help"])
            return gr.update()
        return append_row(rows, Detection((label or "").strip() or t["clicked_object"], clicks["found"]))

    def segment(image, rows):
        try:
            shown, _, _, notices = studio.segment_rows(image, rows)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, str(err)
        return shown, "\n\n".join(notices)

    def inpaint(image, rows, mode, prompt, each, dilation, blur, strength, guidance, steps, seed):
        settings = EditSettings(dilation=int(dilation), blur=int(blur), strength=float(strength), guidance=float(guidance),
                                steps=int(steps), seed=int(seed))
        chosen = {t["remove"]: "remove", t["replace"]: "replace", t["background"]: "background"}.get(mode, mode)
        try:
            edited, notices = studio.edit_rows(image, rows, chosen, prompt or "", settings, bool(each))
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, None, str(err)
        path = Path(tempfile.mkdtemp(prefix="sphinx_vi_edit_")) / "edited.png"
        edited.save(path)
        return edited, str(path), "\n\n".join(notices)

    def chat(image, message, history):
        """Streams the answer into the chat, token by token; boxes in it are drawn on the image as they appear."""
        history = history or []
        pairs = [(_text(history[i]), _text(history[i + 1])) for i in range(0, len(history) - 1, 2)]
        shown = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        boxes = None
        try:
            for text, drawn in studio.chat_stream(image, message, pairs):
                shown[-1] = {"role": "assistant", "content": text}
                boxes = drawn if drawn is not None else boxes
                yield shown, "", boxes
        except StudioInputError as err:
            gr.Warning(str(err))
            yield history, message, None  # the message stays in the box: nothing typed is lost
            return
        yield shown, "", boxes

    with gr.Blocks(title=t["title"]) as demo:
        gr.Markdown(f"# {t['title']}")
        gr.Markdown(studio.model_card(), elem_id="model-card")
        gr.Markdown(studio.backends(), elem_id="backends")
        with gr.Tab(t["detect_tab"]):
            clicks = gr.State(dict(NO_CLICKS))
            with gr.Row():
                with gr.Column():
                    # a File, not an Image: a corrupt upload must reach our loader (and its clear message),
                    # not fail inside the component's own decoding
                    image = gr.File(label=t["image"], file_types=["image"], type="filepath", elem_id="input-image")
                    preview = gr.Image(label=t["click_help"], interactive=False, type="pil", format="png", elem_id="preview")
                    with gr.Row():
                        kind = gr.Radio([t["positive"], t["negative"], t["corner"]], value=t["positive"], label=t["click_kind"],
                                        elem_id="click-kind")
                        choice = gr.Radio([("1", "1")], value="1", label=t["candidate"], elem_id="candidate")
                    with gr.Row():
                        new_label = gr.Textbox(label=t["new_label"], elem_id="new-label")
                        add_btn = gr.Button(t["add_to_list"], elem_id="add-btn")
                        reset_btn = gr.Button(t["reset_clicks"], elem_id="reset-btn")
                    query = gr.Textbox(label=t["query"], value="hình tròn", elem_id="query")
                    with gr.Row():
                        detect_btn = gr.Button(t["detect"], variant="primary", elem_id="detect-btn")
                        segment_btn = gr.Button(t["segment"], elem_id="segment-btn")
                    if trained_for:
                        gr.Examples([[str(e.image), e.query] for e in trained_for], inputs=[image, query], label=t["examples_trained"])
                    gr.Examples([[str(p)] for p in shown_photos], inputs=[image], label=t["examples_photos"])
                with gr.Column():
                    annotated = gr.Image(label=t["annotated"], type="pil", elem_id="annotated", format="png")
                    notice = gr.Markdown(elem_id="notice")
                    table = gr.Dataframe(headers=HEADERS, datatype=["bool", "str", "number", "number", "number", "number"],
                                         label=t["list"], interactive=True, elem_id="det-list")
                    raw = gr.Textbox(label=t["raw"], lines=3)
            with gr.Accordion(t["edit"], open=False, elem_id="edit-panel"):
                with gr.Row():
                    mode = gr.Radio([t["remove"], t["replace"], t["background"]], value=t["remove"], label=t["mode"], elem_id="edit-mode")
                    prompt = gr.Textbox(label=t["prompt"])
                    each = gr.Checkbox(False, label=t["each"])
                with gr.Row():
                    dilation = gr.Slider(0, 64, 8, step=1, label=t["dilation"])
                    blur = gr.Slider(0, 32, 4, step=1, label=t["blur"])
                    strength = gr.Slider(0.1, 1.0, 0.99, step=0.01, label=t["strength"])
                    guidance = gr.Slider(0.0, 15.0, 7.5, step=0.5, label=t["guidance"])
                    steps = gr.Slider(1, 100, 30, step=1, label=t["steps"])
                    seed = gr.Number(0, precision=0, label=t["seed"])
                edit_btn = gr.Button(t["edit"], elem_id="edit-btn")
                with gr.Row():
                    edited = gr.Image(label=t["edited"], type="pil", format="png", elem_id="edited")
                    download = gr.File(label=t["download"])
        with gr.Tab(t["chat"]), gr.Row():
            chat_image = gr.File(label=t["image"], file_types=["image"], type="filepath")
            with gr.Column():
                bot = gr.Chatbot(label=t["chat"], elem_id="chatbot")
                msg = gr.Textbox(label=t["message"], elem_id="chat-message")
                send = gr.Button(t["send"], elem_id="chat-send")
                chat_boxes = gr.Image(label=t["annotated"], type="pil", format="png", interactive=False, elem_id="chat-boxes")
                gr.ClearButton([bot, msg, chat_boxes], value=t["clear"])
        image.change(show_preview, [image], [preview, notice, clicks])
        preview.select(click, [image, clicks, kind, choice], [preview, notice, clicks, choice])
        choice.input(segment_clicks, [image, clicks, choice], [preview, notice, clicks, choice])
        reset_btn.click(show_preview, [image], [preview, notice, clicks])
        add_btn.click(add_clicked, [clicks, new_label, table], [table])
        detect_btn.click(detect, [image, query], [annotated, table, raw, notice], api_name="detect")
        segment_btn.click(segment, [image, table], [annotated, notice], api_name="segment")
        edit_btn.click(inpaint, [image, table, mode, prompt, each, dilation, blur, strength, guidance, steps, seed],
                       [edited, download, notice], api_name="inpaint")
        send.click(chat, [chat_image, msg, bot], [bot, msg, chat_boxes], api_name="chat")
        msg.submit(chat, [chat_image, msg, bot], [bot, msg, chat_boxes])
    return demo


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, share: bool = False, max_upload_mb: int = 20,
           block: bool = True):
    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=1)  # one model, one request at a time
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{max_upload_mb}mb",
                       prevent_thread_lock=not block, show_error=False, quiet=not block)
