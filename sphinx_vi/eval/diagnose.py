"""Why does grounding fail? `python -m sphinx_vi.eval.diagnose --model DIR --data DIR [--num N]`

1. Are the visual tokens informative? For each tower and for the final visual tokens, the
   standard deviation across images next to the overall one. A ratio near zero means the towers
   collapsed to image-independent features and the LLM cannot see the image.
2. Does the model read the phrase? (with a `llava/rec.json` in DIR) For images with two
   referring expressions, ask both: how often the two answers are the same box, and how far apart
   their centres are against the two targets'. Same boxes / small distances mean the answer
   follows the image, not the question.
3. Which answer tokens carry the loss? (same file) The mean loss at each position of the REC
   answer `[0.xy,0.xy,0.xy,0.xy]`: a digit near ln 10 = 2.30 nats is a uniform guess.
4. Which object does a miss box instead? (with `coco/instances.json`) Greedy REC answers by the
   number of objects in the image: hit, another object of the same kind (the colour was not bound),
   another object of a different kind, no object at all, or no box.
5. Where do the heads look when the answer starts? The attention mass of every head on the
   target's visual tokens at the first answer positions, for hits and for misses: the box is
   decided there (once x1 is written, the rest follows from the text).
6. Does the answer's first position read the whole phrase? The attention mass of every head there on
   the question's expression, and within it on the target's colour word and kind word, for hits and
   for misses: a layer-0 head that reads the kind word but not the colour word cannot tell two
   shapes of the same kind apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..factory import load_model
from ..generation import Generator
from ..guidance import TargetReader, pieces_in_span
from ..text.tokens import IMAGE_TOKEN


def feature_spread(gen: Generator, images: list[Path]) -> dict[str, dict[str, float]]:
    """{part: {across_images, overall, ratio}} over the given images."""
    px = torch.stack([gen.processor.image_to_views(p) for p in images])  # (N, V, 3, R, R)
    n, v = px.shape[:2]
    out: dict[str, dict[str, float]] = {}

    def spread(name: str, x: torch.Tensor) -> None:
        across = (x - x.mean(0, keepdim=True)).std().item()
        overall = x.std().item()
        out[name] = {"across_images": across, "overall": overall, "ratio": across / overall if overall else 0.0}

    with torch.no_grad():
        views = px.flatten(0, 1)
        for name, enc in gen.model.vision.encoders.items():
            grid = enc(views).grid
            spread(f"tower.{name}", grid.reshape(n, v, *grid.shape[1:]))
        spread("visual_tokens", gen.model.vision(px))
    return out


def phrase_sensitivity(gen: Generator, rec_file: Path, image_root: Path, pairs: int = 25) -> dict[str, float]:
    """Ask two REC questions about the same image; compare the two answers to the two targets."""
    from collections import defaultdict

    from ..data.formats import load_llava
    from ..grounding import parse

    by_image: dict[str, list] = defaultdict(list)
    for s in load_llava(rec_file, image_root=image_root).samples:
        by_image[str(s.images[0])].append(s)
    chosen = [v[:2] for v in by_image.values() if len(v) >= 2][:pairs]
    if not chosen:
        raise ValueError(f"{rec_file}: no image has two referring expressions")
    identical, d_pred, d_gt, answered = 0, [], [], 0

    def centre_distance(a, b) -> float:
        return (((a[0] + a[2]) - (b[0] + b[2])) ** 2 + ((a[1] + a[3]) - (b[1] + b[3])) ** 2) ** 0.5 / 2

    for a, b in chosen:
        image = gen.processor.load(a.images[0])
        questions = [x.messages[0]["content"].replace(IMAGE_TOKEN, "").strip() for x in (a, b)]
        answers = gen.answer([image, image], questions)
        boxes = [parse(t, image.size).boxes for t in answers]
        targets = [parse(x.messages[-1]["content"], image.size).boxes[0] for x in (a, b)]
        if boxes[0] and boxes[1]:
            answered += 1
            identical += boxes[0][0] == boxes[1][0]
            d_pred.append(centre_distance(boxes[0][0], boxes[1][0]))
            d_gt.append(centre_distance(*targets))
    n = max(answered, 1)
    return {"pairs": len(chosen), "answered_pairs": answered, "identical_answers": identical / n,
            "answer_centre_distance_px": sum(d_pred) / n, "target_centre_distance_px": sum(d_gt) / n}


def answer_token_loss(gen: Generator, rec_file: Path, image_root: Path, limit: int = 64, batch: int = 16) -> list[dict]:
    """Mean teacher-forced loss at each answer position of REC samples: [{position, token, loss}, ...]
    (the token is the most frequent one at that position, e.g. '[' '0' '.' digit digit ',' ...)."""
    from collections import Counter

    from ..data.encode import SampleEncoder, collate
    from ..data.formats import load_llava

    samples = load_llava(rec_file, image_root=image_root).samples[:limit]
    if not samples:
        raise ValueError(f"{rec_file}: no samples")
    encoder, tok = SampleEncoder(gen.processor), gen.processor.tokenizer
    sums: dict[int, float] = {}
    counts: Counter = Counter()
    tokens: dict[int, Counter] = {}
    gen.model.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            b = collate([encoder(s) for s in samples[i : i + batch]], tok.pad_token_id)
            logits = gen.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=b["pixel_values"]).logits
            targets = b["labels"][:, 1:]  # (B, L-1): position t predicts token t + 1
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
            for r in range(targets.shape[0]):
                for k, t in enumerate((targets[r] >= 0).nonzero().flatten().tolist()):
                    sums[k] = sums.get(k, 0.0) + float(loss[r, t])
                    counts[k] += 1
                    tokens.setdefault(k, Counter())[tok.decode([int(targets[r, t])])] += 1
    return [{"position": k, "token": tokens[k].most_common(1)[0][0], "loss": sums[k] / counts[k]} for k in sorted(sums)]


def rec_outcomes(gen: Generator, data: Path, limit: int | None = None, batch: int = 32) -> list[dict[str, Any]]:
    """Greedy REC answers on `data` (a synthetic world: llava/rec.json + coco/instances.json), one row
    per sample: {objects, outcome}; outcome is hit / same_kind / other_kind / no_object / unparsed."""
    from collections import defaultdict

    from ..grounding import parse
    from ..grounding.geometry import box_iou
    from .runner import MAX_NEW_TOKENS, answer, image_size, load_task

    samples = load_task(data, "rec", limit)
    coco_file = data / "coco" / "instances.json"
    if not samples or not coco_file.exists():
        raise ValueError(f"{data}: needs llava/rec.json and coco/instances.json (a synthetic world)")
    coco = json.loads(coco_file.read_text())
    image_ids = {Path(i["file_name"]).name: i["id"] for i in coco["images"]}
    objects: dict[int, list[tuple[tuple[float, ...], int]]] = defaultdict(list)  # image id → [(xyxy, category)]
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        objects[a["image_id"]].append(((x, y, x + w, y + h), a["category_id"]))
    rows = []
    for s, text in zip(samples, answer(gen, samples, MAX_NEW_TOKENS["rec"], batch, "rec")):
        here = objects[image_ids[Path(s.images[0]).name]]
        size = image_size(s)
        gt = parse(s.messages[-1]["content"], size).boxes[0]
        target = max(here, key=lambda o: box_iou(o[0], gt))
        pred = next(iter(parse(text, size).boxes), None)
        if pred is None:
            outcome = "unparsed"
        elif box_iou(pred, gt) >= 0.5:
            outcome = "hit"
        else:
            chosen = max(here, key=lambda o: box_iou(o[0], pred))
            if chosen is target or box_iou(chosen[0], pred) < 0.5:
                outcome = "no_object"
            else:
                outcome = "same_kind" if chosen[1] == target[1] else "other_kind"
        rows.append({"objects": len(here), "outcome": outcome})
    return rows


def _eager_attention(gen: Generator, samples: list, batch: int):
    """Yield (collated batch, attention maps (B, layers, heads, L, L)) of `samples`, teacher-forced; the eager
    kernel (the one that returns attention maps) is borrowed and the previous one restored."""
    from ..data.encode import SampleEncoder, collate

    previous = gen.model.language_model.config._attn_implementation
    gen.model.language_model.set_attn_implementation("eager")
    encoder = SampleEncoder(gen.processor)
    try:
        with torch.no_grad():
            for i in range(0, len(samples), batch):
                b = collate([encoder(s) for s in samples[i : i + batch]], gen.processor.tokenizer.pad_token_id)
                out = gen.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               pixel_values=b["pixel_values"], output_attentions=True)
                yield b, torch.stack(out.attentions, 1)
    finally:
        gen.model.language_model.set_attn_implementation(previous)


def _target_reader(gen: Generator) -> TargetReader:
    return TargetReader(gen.processor.tokenizer, gen.model.config.image_token_id, gen.model.vision.layout)


def attention_on_target(gen: Generator, data: Path, hits: list[bool], positions: int = 8, batch: int = 16) -> dict[str, Any]:
    """Mean attention mass of each (layer, head) on the target's visual tokens at the first `positions`
    answer positions of `data`'s REC samples (teacher-forced), separately for `hits` and misses:
    {"hit": [[[mass per position] per head] per layer], "miss": ...}."""
    from .runner import load_task

    samples = load_task(data, "rec", len(hits))
    cfg = gen.model.config.text_config
    reader = _target_reader(gen)
    sums = torch.zeros(2, cfg.num_hidden_layers, cfg.num_attention_heads, positions)  # [miss, hit]
    counts = torch.zeros(2, 1, 1, positions)
    for i, (b, maps) in enumerate(_eager_attention(gen, samples, batch)):
        query, focus = reader.box(b["input_ids"], b["labels"])  # (B, L), (B, L, L)
        for r in range(maps.shape[0]):
            first = query[r].nonzero().flatten()[:positions]
            mass = (maps[r][:, :, first] * focus[r, first].float()).sum(-1)  # (layers, heads, P)
            hit = int(hits[i * batch + r])
            sums[hit, :, :, : len(first)] += mass
            counts[hit, :, :, : len(first)] += 1
    mean = sums / counts.clamp(min=1)
    return {"miss": mean[0].tolist(), "hit": mean[1].tolist(), "samples": {"hit": sum(hits), "miss": len(hits) - sum(hits)}}


def phrase_reading(gen: Generator, data: Path, hits: list[bool], batch: int = 16) -> dict[str, Any]:
    """Attention mass of each (layer, head), at the position that predicts a REC answer's first token, on the
    tokens of the question's expression, and within it on the target's colour word and kind word (the first
    of each it names: a relation's anchor comes after), for `hits` and misses:
    {"phrase" | "colour" | "kind": {"hit": [[mass per head] per layer], "miss": ...}}."""
    from ..data.world.language import COLOURS, KINDS
    from .runner import load_task

    samples = load_task(data, "rec", len(hits))
    cfg = gen.model.config.text_config
    reader = _target_reader(gen)
    vocab = {"colour": [w for c in COLOURS for w in (c.en, c.vi)], "kind": [w for k in KINDS for w in (k.en, k.vi)]}
    parts = ("phrase", "colour", "kind")
    sums = torch.zeros(len(parts), 2, cfg.num_hidden_layers, cfg.num_attention_heads)  # part, [miss, hit]
    counts = torch.zeros(2)
    for i, (b, maps) in enumerate(_eager_attention(gen, samples, batch)):
        query, focus = reader.phrase(b["input_ids"], b["labels"])
        for r in range(maps.shape[0]):
            rows = query[r].nonzero().flatten()
            if not len(rows):
                continue
            q, phrase = int(rows[0]), focus[r, int(rows[0])].nonzero().flatten().tolist()
            pieces = reader.pieces(b["input_ids"][r, phrase].tolist())
            text = "".join(pieces)
            masks = {"phrase": phrase}
            for part, words in vocab.items():
                found = min(((text.find(w), w) for w in words if w in text), default=None)
                masks[part] = [] if found is None else [phrase[k] for k in pieces_in_span(pieces, found[0], found[0] + len(found[1]))]
            hit = int(hits[i * batch + r])
            for p, part in enumerate(parts):
                sums[p, hit] += maps[r][:, :, q, masks[part]].sum(-1)  # (layers, heads)
            counts[hit] += 1
    mean = sums / counts.view(1, 2, 1, 1).clamp(min=1)
    return {part: {"miss": mean[p, 0].tolist(), "hit": mean[p, 1].tolist()} for p, part in enumerate(parts)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path, help="a directory with images/ (e.g. a synthetic world)")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--rec-limit", type=int, default=200, help="REC samples for the outcome and attention diagnostics")
    args = p.parse_args()
    gen = Generator(*load_model(args.model))
    images = sorted((args.data / "images").glob("*.png"))[: args.num]
    if len(images) < 2:
        raise SystemExit(f"error: need at least 2 images under {args.data / 'images'}")
    result: dict[str, Any] = dict(feature_spread(gen, images))
    print(f"{'part':<28}{'across images':>14}{'overall':>10}{'ratio':>8}")
    for k, r in result.items():
        print(f"{k:<28}{r['across_images']:>14.5f}{r['overall']:>10.4f}{r['ratio']:>8.4f}")
    rec = args.data / "llava" / "rec.json"
    if rec.exists():
        ps = phrase_sensitivity(gen, rec, args.data, pairs=args.num)
        print(f"phrase sensitivity over {ps['answered_pairs']} image(s) with two questions: identical answers "
              f"{ps['identical_answers']:.0%}, answer centres {ps['answer_centre_distance_px']:.1f} px apart "
              f"vs targets {ps['target_centre_distance_px']:.1f} px")
        result["phrase_sensitivity"] = ps
        per_token = answer_token_loss(gen, rec, args.data, limit=4 * args.num)
        print("answer loss per position (nats; ln 10 = 2.30 is a uniform digit): "
              + " ".join(f"{r['token'].strip() or '␣'}:{r['loss']:.2f}" for r in per_token))
        result["answer_token_loss"] = per_token
    if rec.exists() and (args.data / "coco" / "instances.json").exists():
        outcomes = rec_outcomes(gen, args.data, limit=args.rec_limit)
        table: dict[int, dict[str, int]] = {}
        for row in outcomes:
            table.setdefault(row["objects"], {}).setdefault(row["outcome"], 0)
            table[row["objects"]][row["outcome"]] += 1
        print("REC outcomes by objects in the image (hit / same kind: the colour was not bound / other kind / no object / unparsed):")
        for n in sorted(table):
            print(f"  {n} object(s): " + ", ".join(f"{k} {v}" for k, v in sorted(table[n].items())))
        result["rec_outcomes"] = table
        att = attention_on_target(gen, args.data, [r["outcome"] == "hit" for r in outcomes])
        print(f"attention mass on the target at the first answer positions (hits {att['samples']['hit']} | misses {att['samples']['miss']}):")
        for layer, (hit_heads, miss_heads) in enumerate(zip(att["hit"], att["miss"])):
            for head, (h, m) in enumerate(zip(hit_heads, miss_heads)):
                print(f"  layer {layer} head {head}:  " + " ".join(f"{v:.2f}" for v in h) + "  |  " + " ".join(f"{v:.2f}" for v in m))
        result["attention_on_target"] = att
        reading = phrase_reading(gen, args.data, [r["outcome"] == "hit" for r in outcomes])
        print("attention mass on the question's expression / its colour word / its kind word at the answer's first position "
              "(per head; hits | misses):")
        for layer in range(len(reading["phrase"]["hit"])):
            print(f"  layer {layer}: " + "  ".join(
                f"{part} " + ",".join(f"{v:.2f}" for v in reading[part]["hit"][layer]) + " | "
                + ",".join(f"{v:.2f}" for v in reading[part]["miss"][layer]) for part in ("phrase", "colour", "kind")))
        result["phrase_reading"] = reading
    print(json.dumps(result))


if __name__ == "__main__":
    main()
