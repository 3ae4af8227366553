"""The Gradio studio: named endpoints /detect, /segment, /inpaint, /chat over `Studio`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from sphinx_vi.tools import EditSettings

from .core import Studio, StudioInputError, example_images

TABLE_HEADERS = ["label", "x1", "y1", "x2", "y2"]


def _text(message: dict) -> str:
    """A Chatbot message's text (Gradio 6 stores content as a list of typed parts)."""
    content = message.get("content", "")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def build_ui(studio: Studio) -> gr.Blocks:
    t = studio.t
    examples = example_images(Path(tempfile.gettempdir()) / "sphinx_vi_studio_examples")

    def show_preview(image):
        if not image:
            return None, ""
        try:
            img, notices = studio.load(image)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, str(err)
        return img, "\n\n".join(notices)

    def detect(image, query):
        try:
            out = studio.detect(image, query)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, [], "", str(err)
        return out.annotated, out.table, out.answer, "\n\n".join(out.notices)

    def segment(image, query):
        try:
            shown, out, _ = studio.segment(image, query)
        except StudioInputError as err:
            gr.Warning(str(err))
            return None, str(err)
        return shown, "\n\n".join(out.notices)

    def inpaint(image, query, mode, prompt, dilation, blur, strength, guidance, steps, seed):
        settings = EditSettings(dilation=int(dilation), blur=int(blur), strength=float(strength), guidance=float(guidance),
                                steps=int(steps), seed=int(seed))
        try:
            edited, notices = studio.inpaint(image, query, "replace" if mode == t["replace"] else "remove", prompt or "", settings)
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
            with gr.Row():
                with gr.Column():
                    # a File, not an Image: a corrupt upload must reach our loader (and its clear message),
                    # not fail inside the component's own decoding
                    image = gr.File(label=t["image"], file_types=["image"], type="filepath", elem_id="input-image")
                    preview = gr.Image(label=t["image"], interactive=False, height=220, elem_id="preview")
                    query = gr.Textbox(label=t["query"], value="hình tròn", elem_id="query")
                    with gr.Row():
                        detect_btn = gr.Button(t["detect"], variant="primary", elem_id="detect-btn")
                        segment_btn = gr.Button(t["segment"], elem_id="segment-btn")
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label=t["examples"])
                with gr.Column():
                    annotated = gr.Image(label=t["annotated"], type="pil", elem_id="annotated", format="png")
                    notice = gr.Markdown(elem_id="notice")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label=t["table"], interactive=False)
                    raw = gr.Textbox(label=t["raw"], lines=3)
            with gr.Accordion(t["edit"], open=False):
                with gr.Row():
                    mode = gr.Radio([t["remove"], t["replace"]], value=t["remove"], label=t["mode"])
                    prompt = gr.Textbox(label=t["prompt"])
                with gr.Row():
                    dilation = gr.Slider(0, 64, 8, step=1, label=t["dilation"])
                    blur = gr.Slider(0, 32, 4, step=1, label=t["blur"])
                    strength = gr.Slider(0.1, 1.0, 0.99, step=0.01, label=t["strength"])
                    guidance = gr.Slider(0.0, 15.0, 7.5, step=0.5, label=t["guidance"])
                    steps = gr.Slider(1, 100, 30, step=1, label=t["steps"])
                    seed = gr.Number(0, precision=0, label=t["seed"])
                edit_btn = gr.Button(t["edit"], elem_id="edit-btn")
                with gr.Row():
                    edited = gr.Image(label=t["edited"], type="pil", format="png")
                    download = gr.File(label=t["download"])
        with gr.Tab(t["chat"]), gr.Row():
            chat_image = gr.File(label=t["image"], file_types=["image"], type="filepath")
            with gr.Column():
                bot = gr.Chatbot(label=t["chat"], elem_id="chatbot")
                msg = gr.Textbox(label=t["message"], elem_id="chat-message")
                send = gr.Button(t["send"], elem_id="chat-send")
                chat_boxes = gr.Image(label=t["annotated"], type="pil", format="png", interactive=False, elem_id="chat-boxes")
                gr.ClearButton([bot, msg, chat_boxes], value=t["clear"])
        image.change(show_preview, [image], [preview, notice])
        detect_btn.click(detect, [image, query], [annotated, table, raw, notice], api_name="detect")
        segment_btn.click(segment, [image, query], [annotated, notice], api_name="segment")
        edit_btn.click(inpaint, [image, query, mode, prompt, dilation, blur, strength, guidance, steps, seed],
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
