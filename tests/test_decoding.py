"""The lean greedy loop: exactly `generate`'s ids for the options it implements, and it steps aside for the rest."""

import torch


def test_lean_greedy_gives_transformers_ids_with_padding_eos_and_cache(shapes_model, world_image):
    from transformers import DynamicCache

    vi = shapes_model
    texts = [vi.processor.apply_chat_template([{"role": "user", "content": p}])
             for p in ("<image>\nHình tròn màu đỏ ở đâu?", "<image>\nMô tả bức ảnh một cách chi tiết, liệt kê mọi hình.")]
    inputs = vi.processor(texts, [world_image, world_image])  # left-padded batch of two lengths
    assert not bool(inputs["attention_mask"].all())
    tok = vi.processor.tokenizer
    common = dict(max_new_tokens=40, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with torch.inference_mode():
        lean = vi.model.generate(**inputs, **common)
        hf = vi.model.generate(**inputs, **common, output_scores=False)  # an option the lean loop leaves to transformers
        torch.testing.assert_close(lean, hf, rtol=0, atol=0)
        forced = vi.model.generate(**inputs, **common, min_new_tokens=40)
        forced_hf = vi.model.generate(**inputs, **common, min_new_tokens=40, output_scores=False)
        assert torch.equal(forced, forced_hf) and forced.shape[1] == inputs["input_ids"].shape[1] + 40
        # continuing from a cache that already holds the prompt
        cache = DynamicCache()
        first = vi.model.generate(**inputs, **common, cache=cache, return_dict_in_generate=True)
        assert torch.equal(first.sequences, lean) and first.cache.get_seq_length() > 0


def test_lean_greedy_steps_aside_for_other_options(shapes_model):
    from transformers import GenerationConfig

    from sphinx_vi.decoding import lean_greedy_applies

    cfg = GenerationConfig()
    assert lean_greedy_applies({"max_new_tokens": 5}, cfg)
    assert not lean_greedy_applies({"max_new_tokens": 5, "do_sample": True}, cfg)
    assert not lean_greedy_applies({"max_new_tokens": 5, "num_beams": 3}, cfg)
    assert not lean_greedy_applies({"max_new_tokens": 5, "streamer": object()}, cfg)
    assert not lean_greedy_applies({}, cfg)  # no explicit length: transformers' defaults apply
    assert not lean_greedy_applies({"max_new_tokens": 5}, GenerationConfig(repetition_penalty=1.3))
