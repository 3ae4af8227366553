"""What the studio does, without Gradio: models loaded once, each action a plain method."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from threading import Thread

import numpy as np
from PIL import Image, ImageDraw
from transformers import TextIteratorStreamer

from sphinx_vi import SphinxVi
from sphinx_vi.detectors import ForeignDetector
from sphinx_vi.draw import PALETTE, draw_detections
from sphinx_vi.eval.record import headline
from sphinx_vi.factory import provenance
from sphinx_vi.grounding import Detection, parse
from sphinx_vi.images import ImageError, load_image
from sphinx_vi.precision import DType
from sphinx_vi.session import image_key
from sphinx_vi.tools import EditSettings, MaskChoices, MaskPrompt, PromptError, load_inpainter, load_segmenter, union_mask

from .selection import read_rows
from .texts import TEXTS

EDIT_MODES = ("remove", "replace", "background")  # remove the objects, replace them, replace everything but them

CHAT_TOKENS = 128  # the longest chat answer
STREAM_TIMEOUT_S = 300  # a generation that yields nothing for this long is reported, not waited on forever
MAX_PIXELS = 4_000_000  # larger uploads are downscaled (with a notice) before the model sees them
REFUSE_PIXELS = 200_000_000  # beyond this an upload is refused outright


class StudioInputError(ValueError):
    """Bad user input: shown in the UI, never a crash."""


@dataclass
class DetectOutput:
    annotated: Image.Image
    table: list[list]
    answer: str
    notices: list[str]
    detections: list[Detection]
    image: Image.Image


@dataclass
class ClickOutput:
    overlay: Image.Image  # the chosen candidate tinted, the clicks and the box drawn
    choices: MaskChoices  # every candidate mask, best first
    box: tuple[float, float, float, float] | None  # the chosen mask's bounding box (None: an empty mask)
    notices: list[str]


class Studio:
    def __init__(self, model: str = "tiny-shapes", sam: str | None = None, sam_type: str = "vit_h",
                 inpaint: str | None = None, ui_lang: str = "vi", dtype: DType = "float32", detector: str | None = None) -> None:
        self.t = TEXTS[ui_lang]
        self.model_name = model
        self.vi = SphinxVi.load(model, dtype=dtype)
        self.detector = ForeignDetector.load(detector) if detector else None  # another grounding model answers Detect
        self.segmenter = load_segmenter(sam, sam_type)
        self.inpainter = load_inpainter(inpaint)
        self._cache: OrderedDict[tuple[str, str], tuple[str, list[Detection], list[str]]] = OrderedDict()
        # the mask each click prompt gave, by (image, its box): a clicked row keeps its mask while its box is unchanged
        self._clicked: OrderedDict[tuple[str, tuple[float, ...]], np.ndarray] = OrderedDict()

    # --- inputs -------------------------------------------------------------------------------
    def load(self, image) -> tuple[Image.Image, list[str]]:
        if image is None or (isinstance(image, str) and not image):
            raise StudioInputError(self.t["no_image"])
        try:
            img = load_image(image, max_pixels=REFUSE_PIXELS)
        except ImageError as err:
            raise StudioInputError(str(err)) from None
        notices = []
        if img.width * img.height > MAX_PIXELS:
            scale = (MAX_PIXELS / (img.width * img.height)) ** 0.5
            w, h = img.size
            img = img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)
            notices.append(self.t["downscaled"].format(w=w, h=h, nw=img.width, nh=img.height))
        return img, notices

    def model_card(self) -> str:
        """What the loaded model is and what it knows, for the header: an embedded demo model says it knows the
        synthetic world only, and how to load a real one."""
        info = provenance(self.model_name)
        if info["kind"] == "embedded":
            return self.t["demo_model"].format(name=self.model_name)
        if info["kind"] == "preset":
            return self.t["random_model"].format(name=self.model_name)
        if "conversion" in info:
            return self.t["converted_model"].format(name=self.model_name, source=info["conversion"].get("from", "?"))
        lineage = info.get("lineage", {})
        card = self.t["trained_model"].format(name=self.model_name, stage=lineage.get("stage", "?"), steps=lineage.get("steps", "?"),
                                              data=lineage.get("data", "?"))
        if lineage.get("languages"):
            card += " " + self.t["languages"].format(langs=", ".join(f"{k} {v:,}" for k, v in lineage["languages"].items()))
        figures = headline(info.get("evaluation", {}))
        if figures:
            card += " " + self.t["held_out"].format(figures=figures, data=info["evaluation"].get("data", "?"))
        return card

    def backends(self) -> str:
        seg = self.segmenter.backend + ("" if self.segmenter.backend == "segment-anything" else f" ({self.t['fallback_seg']})")
        inp = self.inpainter.backend + ("" if self.inpainter.backend == "diffusers" else f" ({self.t['fallback_inp']})")
        det = "" if self.detector is None else f" · detect `{self.detector.family.name}`"
        return f"**{self.t['backends']}:** model `{self.model_name}`{det} · segment `{seg}` · inpaint `{inp}`"

    # --- actions ------------------------------------------------------------------------------
    def _detect(self, img: Image.Image, query: str) -> tuple[str, list[Detection], list[str]]:
        key = (image_key(img), query)
        if key not in self._cache:
            answer = self.detector.detect(img, query) if self.detector is not None else self.vi.answer(img, "detect", category=query)
            self._cache[key] = (answer.text, answer.detections, answer.warnings)
            while len(self._cache) > 32:
                self._cache.popitem(last=False)
        return self._cache[key]

    def detect(self, image, query: str) -> DetectOutput:
        img, notices = self.load(image)
        query = (query or "").strip()
        if not query:
            raise StudioInputError(self.t["no_query"])
        text, dets, warnings = self._detect(img, query)
        if warnings:
            notices.append(self.t["unreadable"].format(w="; ".join(warnings[:3])))
        if not dets:
            notices.append(self.t["none_found"])
        table = [[d.label, *(round(v, 1) for v in d.box)] if d.box else [d.label, None, None, None, None] for d in dets]
        return DetectOutput(draw_detections(img, dets), table, text, notices, dets, img)

    def segment(self, image, query: str) -> tuple[Image.Image, DetectOutput, np.ndarray]:
        out = self.detect(image, query)
        boxed = [d for d in out.detections if d.box is not None]
        masks = self.segmenter.segment(out.image, [d.box for d in boxed if d.box is not None])
        return overlay(out.image, masks, boxed), out, masks

    def inpaint(self, image, query: str, mode: str = "remove", prompt: str = "", settings: EditSettings | None = None):
        settings = settings or EditSettings()
        _, out, masks = self.segment(image, query)
        if not len(masks):
            return out.image, out.notices
        if mode == "replace" and not (prompt or "").strip():
            raise StudioInputError(self.t["prompt"])
        mask = union_mask(masks, out.image.size, settings.dilation)
        edited = self.inpainter.inpaint(out.image, mask, prompt.strip() if mode == "replace" else None, settings)
        return edited, out.notices

    # --- the user's own prompts and the editable list --------------------------------------------
    def segment_clicks(self, image, points: list[tuple[float, float, int]], box=None, choice: int = 0,
                       corner: tuple[float, float] | None = None) -> ClickOutput:
        """Masks for clicked points ((x, y, 1): the object, (x, y, 0): not) and/or a drawn box on the loaded image;
        `corner`, a first box corner still waiting for its second, is marked on the preview."""
        img, notices = self.load(image)
        prompt = MaskPrompt(tuple((float(x), float(y)) for x, y, _ in points), tuple(int(v) for *_, v in points),
                            None if box is None else tuple(float(v) for v in box))  # type: ignore[arg-type]
        try:
            choices = self.segmenter.segment_prompt(img, prompt)
        except PromptError as err:
            raise StudioInputError(str(err)) from None
        mask = choices.masks[min(max(int(choice), 0), len(choices.masks) - 1)]
        ys, xs = np.nonzero(mask)
        bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else None
        if bbox is None:
            notices.append(self.t["empty_mask"])
        else:
            self._clicked[(image_key(img), bbox)] = mask
            while len(self._clicked) > 32:
                self._clicked.popitem(last=False)
        return ClickOutput(mark_prompt(overlay(img, mask[None], []), points, box, corner), choices, bbox, notices)

    def mark_corner(self, image, corner: tuple[float, float]) -> Image.Image:
        """The loaded image with a first box corner marked: the click is seen before the box is complete."""
        img, _ = self.load(image)
        return mark_prompt(img.copy(), [], None, corner)

    def segment_rows(self, image, rows) -> tuple[Image.Image, np.ndarray, list[Detection], list[str]]:
        """Masks for the ticked rows of the detection list (model detections and the user's boxes alike)."""
        img, notices = self.load(image)
        masks, dets, problems = self._row_masks(img, rows)
        return overlay(img, masks, dets), masks, dets, notices + problems

    def _row_masks(self, img: Image.Image, rows) -> tuple[np.ndarray, list[Detection], list[str]]:
        """(N, H, W) masks of the ticked rows on the loaded image, their detections, the rows it could not use."""
        dets, problems = read_rows(rows, img.size)
        if not dets:
            raise StudioInputError(" ".join([self.t["no_selection"], *problems]))
        key = image_key(img)
        boxes = [d.box for d in dets if d.box is not None]  # read_rows gives every detection a box
        kept = [self._clicked.get((key, tuple(round(v, 1) for v in b))) for b in boxes]
        todo = [i for i, m in enumerate(kept) if m is None]  # rows without a clicked mask (detections, edited boxes)
        fresh = self.segmenter.segment(img, [boxes[i] for i in todo]) if todo else np.zeros((0, img.height, img.width), bool)
        for i, m in zip(todo, fresh, strict=True):
            kept[i] = m
        return np.stack(kept), dets, problems  # type: ignore[arg-type]

    def edit_rows(self, image, rows, mode: str = "remove", prompt: str = "", settings: EditSettings | None = None,
                  each: bool = False) -> tuple[Image.Image, list[str]]:
        """Remove or replace the ticked objects, or replace the background around them; on the union of their masks
        or (`each`) one mask after another."""
        if mode not in EDIT_MODES:
            raise StudioInputError(f"edit mode {mode!r}: choose {', '.join(EDIT_MODES)}")
        if mode != "remove" and not (prompt or "").strip():
            raise StudioInputError(self.t["prompt"])
        settings = settings or EditSettings()
        img, notices = self.load(image)
        masks, _, problems = self._row_masks(img, rows)
        notices += problems
        text = prompt.strip() if mode != "remove" else None
        if mode == "background":  # everything but the objects (grown by the dilation, so their edges stay)
            inverse = Image.fromarray(255 - np.asarray(union_mask(masks, img.size, settings.dilation)), mode="L")
            return self.inpainter.inpaint(img, inverse, text, settings), notices
        edited = img
        for group in ([m[None] for m in masks] if each else [masks]):
            edited = self.inpainter.inpaint(edited, union_mask(group, img.size, settings.dilation), text, settings)
        return edited, notices

    def chat(self, image, message: str, history: list[tuple[str, str]]) -> str:
        img, _ = self.load(image)
        if not (message or "").strip():
            raise StudioInputError(self.t["message"])
        return self.vi.chat(img, message.strip(), history=history or None, max_new_tokens=CHAT_TOKENS)

    def chat_stream(self, image, message: str, history: list[tuple[str, str]]) -> Iterator[tuple[str, Image.Image | None]]:
        """The answer as it is generated: (text so far, the image with the boxes read so far, or None while there are none).

        The last item is exactly what `chat` answers (the same call, with a streamer attached)."""
        img, _ = self.load(image)
        if not (message or "").strip():
            raise StudioInputError(self.t["message"])
        streamer = AnswerStreamer(self.vi.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S)
        done: dict[str, str] = {}
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                done["answer"] = self.vi.chat(img, message.strip(), history=history or None, max_new_tokens=CHAT_TOKENS,
                                              streamer=streamer)
            except Exception as err:  # surfaced to the caller below, after the stream is closed
                failure.append(err)
                streamer.end()

        def drawn(text: str) -> tuple[str, Image.Image | None]:
            dets = parse(text, img.size).detections
            return text, draw_detections(img, dets) if dets else None

        worker = Thread(target=generate, daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield drawn(self.vi.generator.finish(text))
        worker.join()
        if failure:
            raise failure[0]
        yield drawn(done["answer"])


class AnswerStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` that lets every token through, box brackets and digits included (transformers' waits
    for a space after a symbol); only an incomplete character (U+FFFD) waits for the next token."""

    def put(self, value) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("AnswerStreamer streams one answer at a time")
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))  # one sequence in: one string out
        if text.endswith("\ufffd") or len(text) <= self.print_len:
            return
        self.on_finalized_text(text[self.print_len :])
        self.print_len = len(text)


def overlay(image: Image.Image, masks: np.ndarray, detections: list[Detection]) -> Image.Image:
    """Masks tinted in each detection's colour over the image, boxes and labels on top."""
    base = np.asarray(image.convert("RGB")).astype(np.float32)
    for i, m in enumerate(masks):
        colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
        base[m] = 0.45 * base[m] + 0.55 * colour
    return draw_detections(Image.fromarray(base.astype(np.uint8)), detections)


PROMPT_BOX = (255, 200, 0)  # the user's drawn box and its pending first corner


def mark_prompt(shown: Image.Image, points, box=None, corner: tuple[float, float] | None = None) -> Image.Image:
    """The user's prompt drawn on `shown` (in place): green / red dots for points, the box, a pending first corner."""
    draw = ImageDraw.Draw(shown)
    r = max(3, round(0.012 * max(shown.size)))
    for x, y, label in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(40, 200, 60) if label else (230, 40, 40), outline=(255, 255, 255), width=2)
    if box is not None:
        draw.rectangle(tuple(float(v) for v in box), outline=PROMPT_BOX, width=2)
    if corner is not None:
        cx, cy = corner
        draw.line((cx - 2 * r, cy, cx + 2 * r, cy), fill=PROMPT_BOX, width=2)
        draw.line((cx, cy - 2 * r, cx, cy + 2 * r), fill=PROMPT_BOX, width=2)
    return shown
