"""4-bit and 8-bit language models through bitsandbytes on the CPU: the LLM's linears quantized, answers still read."""

import pytest
import torch

from sphinx_vi import SphinxVi
from sphinx_vi.quantization import bnb_config, weight_bytes


@pytest.mark.parametrize("method, layer", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_quantized_llm_layers_and_a_readable_answer(method, layer, world_image):
    full = SphinxVi.from_pretrained("tiny-shapes")
    quant = SphinxVi.from_pretrained("tiny-shapes", quantization=method)
    attn = quant.model.language_model.model.layers[0].self_attn
    assert type(attn.q_proj).__name__ == layer and type(quant.model.vision.projector[0]).__name__ == "Linear"  # towers untouched
    assert weight_bytes(quant.model.language_model) < weight_bytes(full.model.language_model)
    answer = quant.ask(world_image, "Có gì trong ảnh?", max_new_tokens=12)
    assert isinstance(answer.text, str) and answer.image_size == (128, 128)
    inputs = quant.processor(quant.processor.apply_chat_template([{"role": "user", "content": "<image>\nCó gì?"}]), [world_image])
    with torch.no_grad():
        assert torch.isfinite(quant.model(**inputs).logits.float()).all()


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match="choose nf4 or int8"):
        bnb_config("fp8")  # type: ignore[arg-type]
    assert bnb_config("nf4").bnb_4bit_use_double_quant and bnb_config("int8").load_in_8bit
