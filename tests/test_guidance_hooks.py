"""The guided-attention hooks: the recomputed attention equals the model's own, packed rows, supported families."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from sphinx_vi.data import SampleEncoder, collate, collate_packed
from sphinx_vi.guidance import AttentionGuide, GuideTargets, TargetReader, UnsupportedGuideModelError, box_term, phrase_term
from sphinx_vi.prompts import task_prompt


def _guided_forward(model, guide, targets, batch):
    """One forward with the eager kernel (attention maps returned) and the guide's loss on `targets`."""
    before = model.language_model.config._attn_implementation
    model.language_model.set_attn_implementation("eager")
    try:
        guide.arm(targets)
        with torch.enable_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                        output_attentions=True)
        loss = guide.pop_loss()
    finally:
        guide.remove()
        model.language_model.set_attn_implementation(before)
    return targets.query, targets.focus, out, loss


def _reader(vi):
    return TargetReader(vi.processor.tokenizer, vi.model.config.image_token_id, vi.model.vision.layout)


def test_hook_loss_is_minus_log_attention_mass_of_the_real_heads(tiny, chat):
    """The hook's recomputed attention equals the model's own (eager, output_attentions) per guided head."""
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    batch = collate([enc(chat("Tìm: ngôi sao.", "[0.50,0.00,1.00,0.50]")),
                     enc(chat("Tìm: hình thoi dài hơn.", "[0.00,0.50,0.40,1.00]"))], tiny.processor.tokenizer.pad_token_id)
    targets = _reader(tiny).box(batch["input_ids"], batch["labels"], lead_weight=2.5)
    guide = AttentionGuide(model.language_model, [1], 3, box_term)  # 3 of 4 heads, 2 kv heads
    query, focus, out, loss = _guided_forward(model, guide, targets, batch)
    probs = out.attentions[1][:, :3]  # (B, 3, L, L)
    b, q = query.nonzero(as_tuple=True)
    mass = (probs[b, :, q] * focus[b, q].unsqueeze(1)).sum(-1)  # (Q, 3)
    expected = -(mass.log().mean(-1) * query[b, q]).sum()  # weighted by the lead weight where it chooses the box
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    assert loss.requires_grad and guide.pop_loss() is None  # consumed; hooks removed


def test_packed_rows_give_the_same_box_loss_as_padded_ones(tiny, chat):
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    encoded = [enc(chat("Tìm: ngôi sao.", "[0.50,0.00,1.00,0.50]")),
               enc(chat("Vùng [0.1,0.1,0.4,0.4] là gì?", "hình tròn", task="reg"))]
    pad = tiny.processor.tokenizer.pad_token_id
    losses = []
    for batch in (collate(encoded, pad), collate_packed(encoded, pad, capacity=4096)):
        guide = AttentionGuide(model.language_model, [0, 1], 2, box_term)
        try:
            targets = _reader(tiny).box(batch["input_ids"], batch["labels"], batch.get("position_ids"))
            query = targets.query
            guide.arm(targets, batch.get("position_ids"))
            inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
            with torch.enable_grad():
                model(**inputs)
            losses.append((int(query.sum()), guide.pop_loss()))
        finally:
            guide.remove()
    assert losses[1][1] is not None and batch["input_ids"].shape[0] == 1  # both samples in one packed row
    assert losses[0][0] == losses[1][0]
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-4, atol=1e-4)


def test_guide_rejects_layers_and_heads_the_model_lacks(tiny):
    with pytest.raises(ValueError, match="2-layer"):
        AttentionGuide(tiny.model.language_model, [5], 1, box_term, "guides.box")
    with pytest.raises(ValueError, match=r"guides\.box\.heads"):
        AttentionGuide(tiny.model.language_model, [0], 9, box_term, "guides.box")


def test_phrase_hook_loss_is_minus_mean_log_attention_over_the_phrase(tiny, chat):
    model = tiny.model
    enc = SampleEncoder(tiny.processor)
    batch = collate([enc(chat(task_prompt("rec", "en", expression="the big star"), "[0.50,0.00,1.00,0.50]")),
                     enc(chat("Tìm.", "<p>hình thoi</p> [0.00,0.50,0.40,1.00]"))], tiny.processor.tokenizer.pad_token_id)
    guide = AttentionGuide(model.language_model, [0], 3, phrase_term)
    query, focus, out, loss = _guided_forward(model, guide, _reader(tiny).phrase(batch["input_ids"], batch["labels"]), batch)
    probs = out.attentions[0][:, :3]  # (B, 3, L, L)
    b, q = query.nonzero(as_tuple=True)
    on = focus[b, q].unsqueeze(1).float()  # (Q, 1, L)
    expected = (-(probs[b, :, q].clamp_min(1e-30).log() * on).sum(-1) / on.sum(-1)).mean(-1).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"guides\.phrase\.heads"):
        AttentionGuide(model.language_model, [0], 99, phrase_term, "guides.phrase")


def test_a_llama_decoder_is_guided_with_its_own_rotary_and_gpt2_is_refused():
    """The hook takes the rotary function of the layer it hooks; a family it cannot recompute is refused by name."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, rope_theta=500.0)).eval()
    llama.set_attn_implementation("eager")
    ids = torch.randint(0, 64, (1, 12))
    query = torch.zeros(1, 12)
    query[0, 8:11] = 1.0
    focus = torch.zeros(1, 12, 12, dtype=torch.bool)
    focus[0, :, 2:5] = True
    guide = AttentionGuide(llama, [1], 2, box_term)
    try:
        guide.arm(GuideTargets(query, focus))
        with torch.enable_grad():
            out = llama(input_ids=ids, output_attentions=True)
        loss = guide.pop_loss()
    finally:
        guide.remove()
    mass = out.attentions[1][0, :2, 8:11, 2:5].sum(-1)  # (2 heads, 3 positions)
    torch.testing.assert_close(loss, -mass.log().mean(0).sum(), rtol=1e-4, atol=1e-4)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(UnsupportedGuideModelError, match="GPT2"):
        AttentionGuide(gpt2, [0], 1, box_term)
