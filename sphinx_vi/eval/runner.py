"""Run a model over a held-out data directory and score every task."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm import tqdm

from ..data import Sample, SampleEncoder, collate
from ..data.formats import load_llava, load_text
from ..data.world.language import COLOURS, KINDS, PERSON, RELATIONS
from ..generation import Generator
from ..grounding import parse
from ..grounding.geometry import Box
from ..text.tokens import IGNORE_INDEX
from . import metrics as M
from .gallery import RecResult

MAX_NEW_TOKENS = {"rec": 32, "detection": 160, "keypoints": 352, "vqa": 12, "reg": 32, "ocr": 128, "chart": 64,
                  "grounded_caption": 256}  # each above the longest held-out answer (keypoints 322, captions 210)
RELATION_PHRASES = tuple(phrase for pair in RELATIONS.values() for phrase in pair)  # "below", "ở phía dưới", …
COLOUR_WORDS = {w: c.en for c in COLOURS for w in (c.en, c.vi)}  # every language's word → one name
KIND_WORDS = {w: k.en for k in (*KINDS, PERSON) for w in (k.en, k.en_plural, k.vi)}


def answer(gen: Generator, samples: list[Sample], max_new_tokens: int, batch_size: int = 32, desc: str = "",
           constrain_boxes: bool = True) -> list[str]:
    """Greedy answers to each sample's first user turn, batched; boxes kept to the grammar as the API
    decodes them unless `constrain_boxes` is False."""
    out: list[str] = []
    for i in tqdm(range(0, len(samples), batch_size), desc=desc, leave=False, disable=len(samples) <= batch_size):
        chunk = samples[i : i + batch_size]
        conversations = [[m for m in s.messages if m["role"] != "assistant"][:1] for s in chunk]
        images = [gen.processor.load(p) for s in chunk for p in s.images]
        out += gen.generate(images, conversations, max_new_tokens=max_new_tokens, do_sample=False,
                            constrain_boxes=constrain_boxes)
    return out


def image_size(sample: Sample) -> tuple[int, int]:
    """(width, height) of the sample's first image, read from its header."""
    from PIL import Image

    with Image.open(sample.images[0]) as im:
        return im.size


@dataclass
class Answers:
    """How a task's answers are decoded: `answers(samples, task)` → the model's texts."""

    gen: Generator
    batch_size: int = 32
    constrain_boxes: bool = True

    def __call__(self, samples: list[Sample], task: str) -> list[str]:
        return answer(self.gen, samples, MAX_NEW_TOKENS[task], self.batch_size, task, self.constrain_boxes)


def load_task(data: Path, task: str, limit: int | None) -> list[Sample]:
    """The first `limit` samples of `data`/llava/{task}.json (none if the file is absent)."""
    path = data / "llava" / f"{task}.json"
    if not path.exists():
        return []
    samples = load_llava(path).samples
    return samples[:limit] if limit else samples


def _where(keep: list[bool], *columns: list) -> list[list]:
    """Each column's items where `keep` is true (a subset of the samples, every column cut alike)."""
    return [[x for x, k in zip(col, keep) if k] for col in columns]


def rec_targets(samples: list[Sample]) -> list[Box]:
    """Each REC sample's ground-truth box, in pixels of its image."""
    return [parse(s.messages[-1]["content"], image_size(s)).boxes[0] for s in samples]


def eval_rec(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    answers = ask(samples, "rec")
    sizes = [image_size(s) for s in samples]
    gts = rec_targets(samples)
    preds = [next(iter(parse(a, sz).boxes), None) for a, sz in zip(answers, sizes)]
    scores = M.rec_scores(preds, gts)
    _, baseline = M.best_constant_box(gts, 0.5)
    _, baseline30 = M.best_constant_box(gts, 0.3)
    report = {"rec_acc50": scores["acc50"], "rec_acc30": scores["acc30"], "rec_miou": scores["miou"],
              "rec_parse_rate": scores["parse_rate"], "rec_acc50_baseline": baseline, "rec_acc30_baseline": baseline30,
              "rec_n": len(samples)}
    relation = [any(p in s.messages[0]["content"] for p in RELATION_PHRASES) for s in samples]
    for name, keep in (("relation", relation), ("attribute", [not r for r in relation])):  # "… below the blue triangle" or not
        sub_preds, sub_gts = _where(keep, preds, gts)
        if sub_gts:
            report.update({f"rec_{name}_acc50": M.rec_scores(sub_preds, sub_gts)["acc50"],
                           f"rec_{name}_acc50_baseline": M.best_constant_box(sub_gts, 0.5)[1], f"rec_{name}_n": len(sub_gts)})
    return {**report,
            "_rec_results": [RecResult(str(s.images[0]), s.messages[0]["content"], a, p, g)
                             for s, a, p, g in zip(samples, answers, preds, gts)]}


def eval_detection(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    answers = ask(samples, "detection")
    sizes = [image_size(s) for s in samples]
    gts = [parse(s.messages[-1]["content"], sz).boxes for s, sz in zip(samples, sizes)]
    preds = [parse(a, sz).boxes for a, sz in zip(answers, sizes)]
    cats = [s.messages[0]["content"].split("\n", 1)[-1] for s in samples]  # the query identifies the category
    prf = M.detection_prf(preds, gts)
    ap = M.coco_box_ap(preds, gts, cats, sizes)
    const, _ = M.best_constant_box([b for g in gts for b in g])
    base = M.detection_prf([[const] for _ in samples], gts)
    return {"det_precision_50": prf["precision"], "det_recall_50": prf["recall"], "det_f1_50": prf["f1"],
            "det_ap": ap["ap"], "det_ap50": ap["ap50"], "det_f1_50_baseline": base["f1"], "det_n": len(samples)}


def eval_keypoints(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    answers = ask(samples, "keypoints")
    sizes = [image_size(s) for s in samples]
    boxes = [parse(s.messages[0]["content"], sz).boxes[0] for s, sz in zip(samples, sizes)]
    gts = [next((d.points for d in parse(s.messages[-1]["content"], sz).detections if d.points), {}) for s, sz in zip(samples, sizes)]
    preds = [next((d.points for d in parse(a, sz).detections if d.points), {}) for a, sz in zip(answers, sizes)]
    base = M.mean_pose_baseline(gts, boxes)
    return {"pose_pck": M.pck(preds, gts, boxes), "pose_pck_baseline": M.pck(base, gts, boxes),
            "pose_oks_ap": M.keypoint_oks_ap(preds, gts, boxes, sizes)["ap"],
            "pose_oks_ap_baseline": M.keypoint_oks_ap(base, gts, boxes, sizes)["ap"], "pose_n": len(samples)}


def eval_vqa(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    answers = ask(samples, "vqa")
    gts = [s.messages[-1]["content"] for s in samples]
    questions = [s.messages[0]["content"] for s in samples]
    report = {"vqa_acc": M.vqa_accuracy(answers, gts), "vqa_acc_baseline": M.vqa_majority_baseline(questions, gts), "vqa_n": len(samples)}
    counting = [M.normalize_answer(g).isdigit() for g in gts]
    for name, keep in (("count", counting), ("colour", [not c for c in counting])):
        a, g, q = _where(keep, answers, gts, questions)
        if g:
            report.update({f"vqa_{name}_acc": M.vqa_accuracy(a, g), f"vqa_{name}_acc_baseline": M.vqa_majority_baseline(q, g),
                           f"vqa_{name}_n": len(g)})
    return report


def eval_reg(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    """Region descriptions: the first colour and kind named must be the boxed shape's."""
    answers = ask(samples, "reg")
    gts = [s.messages[-1]["content"] for s in samples]
    scores = M.region_description_scores(answers, gts, COLOUR_WORDS, KIND_WORDS)
    named = [M.named_colour_and_kind(g, COLOUR_WORDS, KIND_WORDS) for g in gts]
    colour, kind = Counter(named).most_common(1)[0][0] if named else ("", "")
    base = M.region_description_scores([f"the {colour} {kind}"] * len(gts), gts, COLOUR_WORDS, KIND_WORDS)
    return {"reg_acc": scores["acc"], "reg_colour_acc": scores["colour_acc"], "reg_kind_acc": scores["kind_acc"],
            "reg_acc_baseline": base["acc"], "reg_n": len(samples)}


def _labelled(samples: list[Sample], answers: list[str]) -> tuple[list[M.Labelled], list[M.Labelled]]:
    """(predicted, ground-truth) (label, box) pairs of each answer, in pixels of its image."""
    sizes = [image_size(s) for s in samples]
    gts = [M.labelled_boxes(parse(s.messages[-1]["content"], sz).detections) for s, sz in zip(samples, sizes)]
    return [M.labelled_boxes(parse(a, sz).detections) for a, sz in zip(answers, sizes)], gts


def eval_ocr(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    preds, gts = _labelled(samples, ask(samples, "ocr"))
    scores = M.text_detection_scores(preds, gts)
    base = M.text_detection_scores(M.constant_labelled_baseline(gts), gts)
    return {"ocr_box_f1_50": scores["f1"], "ocr_word_acc": scores["word_acc"], "ocr_box_f1_50_baseline": base["f1"],
            "ocr_word_acc_baseline": base["word_acc"], "ocr_n": len(samples)}


def eval_grounded_caption(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    preds, gts = _labelled(samples, ask(samples, "grounded_caption"))
    base = M.phrase_box_prf(M.constant_labelled_baseline(gts), gts)
    return {"gcap_f1_50": M.phrase_box_prf(preds, gts)["f1"], "gcap_f1_50_baseline": base["f1"], "gcap_n": len(samples)}


def eval_chart(samples: list[Sample], ask: Answers) -> dict[str, Any]:
    answers = ask(samples, "chart")
    gts = [s.messages[-1]["content"] for s in samples]
    scores = M.table_cell_accuracy(answers, gts)
    base = M.table_cell_accuracy([M.majority_table(gts)] * len(gts), gts)
    return {"chart_cell_acc": scores["cell_acc"], "chart_exact": scores["exact"], "chart_cell_acc_baseline": base["cell_acc"],
            "chart_n": len(samples)}


def _answer_loss(gen: Generator, samples: list[Sample], bs: int = 16) -> float:
    """Mean per-token loss on the labelled tokens of text-only samples (no image)."""
    enc = SampleEncoder(gen.processor)
    total = count = 0.0
    for i in range(0, len(samples), bs):
        batch = collate([enc(s) for s in samples[i : i + bs]], gen.processor.tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = gen.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        total += float(loss)
        count += float((labels != IGNORE_INDEX).sum())
    return total / max(count, 1.0)


def text_loss(gen: Generator, data: Path, limit: int | None, bs: int = 16) -> dict[str, Any]:
    """Held-out text-only losses per token: plain paragraphs (stage 1's language modelling; does the LLM
    still write text?) and the answers of text instructions (what stage 2 trains on)."""
    out: dict[str, Any] = {}
    for key, name in (("text", "paragraphs.jsonl"), ("text_instruction", "instructions.json")):
        path = data / "text" / name
        if path.exists():
            samples = load_text(path).samples[: limit or None]
            out.update({f"{key}_loss": _answer_loss(gen, samples, bs), f"{key}_n": len(samples)})
    return out


TASKS = {"rec": eval_rec, "detection": eval_detection, "keypoints": eval_keypoints, "vqa": eval_vqa, "reg": eval_reg,
         "ocr": eval_ocr, "chart": eval_chart, "grounded_caption": eval_grounded_caption}


def evaluate(gen: Generator, data: str | Path, limit: int | None = None, tasks: list[str] | None = None, batch_size: int = 32,
             constrain_boxes: bool = True) -> dict[str, Any]:
    """Score every task (or `tasks`) on `data`'s first `limit` samples each; greedy answers, boxes kept to
    the grammar unless `constrain_boxes` is False (the report says which: `box_grammar`)."""
    data = Path(data)
    if not (data / "llava").is_dir():
        raise FileNotFoundError(f"{data}: no llava/ folder (make a held-out set: python -m sphinx_vi.data synth --out {data} --seed 1)")
    report: dict[str, Any] = {"box_grammar": constrain_boxes}
    ask = Answers(gen, batch_size, constrain_boxes)
    for task in list(TASKS) if tasks is None else tasks:  # [] scores no task: the text losses alone
        samples = load_task(data, task, limit)
        if samples:
            report.update(TASKS[task](samples, ask))
    report.update(text_loss(gen, data, limit))
    return report


class Row(NamedTuple):
    """One line of the report: its label, the report key, the baseline's key and what that baseline is."""

    label: str
    key: str
    baseline: str | None = None
    baseline_is: str = ""


CONSTANT_BOX = "best constant box"
ROWS = [
    Row("REC Acc@0.5", "rec_acc50", "rec_acc50_baseline", CONSTANT_BOX),
    Row("REC Acc@0.3", "rec_acc30", "rec_acc30_baseline", CONSTANT_BOX),
    Row("REC mean IoU", "rec_miou"),
    Row("REC answers parsed", "rec_parse_rate"),
    Row("REC relation Acc@0.5", "rec_relation_acc50", "rec_relation_acc50_baseline", CONSTANT_BOX + " of the subset"),
    Row("REC attribute Acc@0.5", "rec_attribute_acc50", "rec_attribute_acc50_baseline", CONSTANT_BOX + " of the subset"),
    Row("detection F1@0.5", "det_f1_50", "det_f1_50_baseline", "one constant box per query"),
    Row("detection P@0.5", "det_precision_50"),
    Row("detection R@0.5", "det_recall_50"),
    Row("detection COCO AP", "det_ap"),
    Row("pose PCK@0.1", "pose_pck", "pose_pck_baseline", "mean pose inside the given box"),
    Row("pose OKS AP", "pose_oks_ap", "pose_oks_ap_baseline", "mean pose inside the given box"),
    Row("VQA accuracy", "vqa_acc", "vqa_acc_baseline", "majority answer per question kind"),
    Row("VQA counting", "vqa_count_acc", "vqa_count_acc_baseline", "majority answer per question kind"),
    Row("VQA colour", "vqa_colour_acc", "vqa_colour_acc_baseline", "majority answer per question kind"),
    Row("REG colour+kind", "reg_acc", "reg_acc_baseline", "the most common colour and kind"),
    Row("OCR box F1@0.5", "ocr_box_f1_50", "ocr_box_f1_50_baseline", "most common word at the best constant box"),
    Row("OCR word accuracy", "ocr_word_acc", "ocr_word_acc_baseline", "most common word at the best constant box"),
    Row("chart cell accuracy", "chart_cell_acc", "chart_cell_acc_baseline", "most common cell at each place"),
    Row("grounded cap. F1@0.5", "gcap_f1_50", "gcap_f1_50_baseline", "most common phrase at the best constant box"),
    Row("held-out text loss", "text_loss"),
    Row("held-out instr. loss", "text_instruction_loss"),
]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'metric':<22}{'model':>10}{'baseline':>10}"]
    for label, key, base, _ in ROWS:
        if key in report:
            b = f"{report[base]:>10.3f}" if base and base in report else f"{'':>10}"
            lines.append(f"{label:<22}{report[key]:>10.3f}{b}")
    return "\n".join(lines)

