"""The benchmark cases, each as "build inputs once, then a callable per side" on the parity pair.

Inputs are real: stage-2 samples of the synthetic world (every task plus text-only
instructions), tokenised by our processor with 256 visual tokens per image, so lengths follow
the stage-2 length mix. `suite.parity_checks` proves both sides do the same work (equal
losses, identical generated ids) before anything is timed.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import EncodedSample, SampleEncoder
from ..data.formats import load_llava
from ..data.world.generate import synthesize
from ..generation import Generator, build_messages
from ..session import ChatSession
from .loader import stage2_samples
from .parity import IMAGE_TOKEN_ID, normalise

Side = str  # "ours" | "hf" | "ours_padded" (our engine on the padded batches)


@dataclass
class Workload:
    samples: list[EncodedSample]  # stage-2 samples, encoded for the pair (256 visual tokens per image)
    prompts: list[tuple[torch.Tensor, torch.Tensor]]  # (prompt ids (L,), views (1, 1, 3, R, R)) with a generation prompt
    images: list[Any]  # the images behind `prompts` (for the chat session)


def make_workload(gen: Generator, num: int = 64, seed: int = 0) -> Workload:
    """`num` stage-2 samples and 8 single-image prompts from a freshly synthesised world (room for 512 text tokens)."""
    encoder = SampleEncoder(gen.processor, max_length=max(1024, gen.processor.settings.tokens_per_image + 512))
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, 60, seed=seed, progress=False)
        samples = [encoder(s) for s in stage2_samples(Path(tmp), num, seed)]
        rec = load_llava(Path(tmp) / "llava" / "rec.json").samples[:8]
        prompts, images = [], []
        for s in rec:
            question = s.messages[0]["content"]
            text = gen.processor.apply_chat_template([{"role": "user", "content": question}])
            batch = gen.processor(text, [s.images[0]])
            prompts.append((batch["input_ids"][0], batch["pixel_values"]))
            images.append(gen.processor.load(s.images[0]))
    return Workload(samples, prompts, images)


def _inputs(batch: dict[str, Any], side: Side) -> dict[str, Any]:
    out = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) }
    if side == "hf" and out.get("pixel_values") is not None:
        out["pixel_values"] = normalise(out["pixel_values"])
    return {k: v for k, v in out.items() if v is not None}


def _trainable(model: Any, side: Side) -> list[torch.nn.Parameter]:
    """LLaVA stage 2 on both sides: projector + LLM learn, the vision tower is frozen."""
    model.requires_grad_(True)
    tower = model.model.vision_tower if side == "hf" else model.vision.encoders["clip_vit"]  # ours, ours_padded
    tower.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def batches(work: Workload, batch_size: int, seed: int = 0) -> list[list[EncodedSample]]:
    """The samples in a random order, cut into batches (what a plain padded loader does)."""
    order = list(range(len(work.samples)))
    random.Random(seed).shuffle(order)
    return [[work.samples[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]


def train_step(model: torch.nn.Module, side: Side, batch_list: list[dict[str, Any]]) -> Callable[[], float]:
    """One optimizer step per call (forward + loss + backward + AdamW), cycling over the batches."""
    opt = torch.optim.AdamW(_trainable(model, side), lr=1e-5)
    model.train()
    state = {"k": 0}

    def step() -> float:
        batch = batch_list[state["k"] % len(batch_list)]
        state["k"] += 1
        loss = model(**_inputs(batch, side)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def useful_tokens(samples: list[EncodedSample]) -> int:
    return sum(len(s) for s in samples)


def generate_fn(model: Any, side: Side, ids: torch.Tensor, views: torch.Tensor, mask: torch.Tensor,
                new_tokens: int) -> Callable[[], torch.Tensor]:
    """Greedy generation of exactly `new_tokens` tokens (EOS and `<image>` suppressed on both sides)."""
    pixel_values = normalise(views) if side == "hf" else views
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
              suppress_tokens=[IMAGE_TOKEN_ID], pad_token_id=0, eos_token_id=None)

    @torch.inference_mode()
    def run() -> torch.Tensor:
        return model.generate(input_ids=ids, pixel_values=pixel_values, attention_mask=mask, **kw)

    return run


def left_padded(prompts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of prompts, left-padded: (ids (B, L), mask (B, L), views (B, 1, 3, R, R))."""
    L = max(len(p) for p, _ in prompts)
    ids = torch.zeros((len(prompts), L), dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, (p, _) in enumerate(prompts):
        ids[i, L - len(p) :], mask[i, L - len(p) :] = p, 1
    return ids, mask, torch.cat([v for _, v in prompts])


TURN_1 = "Describe the image in detail."
TURN_2 = "Now list the shapes with their boxes."
TURN1_TOKENS = 16


def second_turn(gen: Generator, image: Any) -> list[tuple[str, str]]:
    """Turn 1 (forced length) through a session → the history a second turn continues."""
    session = ChatSession(gen, image)
    session.send(TURN_1, max_new_tokens=TURN1_TOKENS, min_new_tokens=TURN1_TOKENS, suppress_tokens=[IMAGE_TOKEN_ID])
    return list(session.history)


def multiturn_fn(side: Side, model: Any, gen: Generator, image: Any, history: list[tuple[str, str]],
                 new_tokens: int) -> tuple[Callable[[], None], Callable[[], list[int]]]:
    """Turn-2 latency as (prepare, run), from the user's prompt to `new_tokens` generated tokens.

    Ours: a session that answered turn 1 (prepared outside the timed call) continues from its
    cache: render + tokenise the conversation, prefill the new turn only. HF: what a LLaVA-style
    stack does every turn — render + tokenise the whole history, preprocess the image, encode it
    and prefill everything again. Both return the full id sequence (compared before timing).
    """
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, suppress_tokens=[IMAGE_TOKEN_ID])
    if side == "ours":
        state: dict[str, Any] = {}

        def prepare() -> None:
            state["s"] = ChatSession(gen, image)
            state["s"].send(TURN_1, max_new_tokens=TURN1_TOKENS, min_new_tokens=TURN1_TOKENS, suppress_tokens=[IMAGE_TOKEN_ID])
            assert state["s"].history == history, "turn 1 differs from the history being continued"

        def run() -> list[int]:
            state["s"].send(TURN_2, **options)
            return state["s"]._ids

        return prepare, run

    @torch.inference_mode()
    def run_hf() -> list[int]:
        text = gen.processor.apply_chat_template(build_messages(TURN_2, history))
        inputs = gen.processor(text, [image])
        out = model.generate(input_ids=inputs["input_ids"], pixel_values=normalise(inputs["pixel_values"]),
                             attention_mask=inputs["attention_mask"], do_sample=False, pad_token_id=0, eos_token_id=None, **options)
        return out[0].tolist()

    return (lambda: None), run_hf
