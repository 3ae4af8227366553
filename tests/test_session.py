"""Chat sessions keep their KV cache: the image is encoded once and each turn prefills only what is new."""

import pytest

from sphinx_vi.generation import Generator
from sphinx_vi.session import ChatSession, image_key


def test_multi_turn_chat_reuses_the_cache_and_answers_the_same(shapes_model, world_image):
    vi = shapes_model
    image = world_image
    prompts = ["Mô tả bức ảnh.", "Hình tròn màu đỏ ở đâu?", "Có bao nhiêu hình vuông trong ảnh?"]
    reference, history = [], []
    for p in prompts:  # stateless: the whole history, image included, every turn
        answer = vi.generator.answer([vi.processor.load(image)], [p], history)[0]
        reference.append(answer)
        history.append((p, answer))

    calls = {"n": 0}
    hook = vi.model.vision.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        vi._session = None
        cached, history = [], []
        for p in prompts:
            answer = vi.chat(image, p, history)
            cached.append(answer)
            history = history + [(p, answer)]
    finally:
        hook.remove()
    assert cached == reference
    assert calls["n"] == 1  # the image was encoded once for three turns
    stats = vi._session.stats
    assert stats["turns"] == 3 and stats["reused_tokens"] > stats["prefilled_tokens"]


def test_chat_with_a_different_history_or_image_starts_over(shapes_model, world_image):
    vi = shapes_model
    a = world_image
    vi.chat(a, "Mô tả bức ảnh.")
    first = vi._session
    vi.chat(a, "Mô tả bức ảnh.", [("Khác", "khác")])  # history that is not the session's
    assert vi._session is not first and vi._session.history[0] == ("Khác", "khác")
    with pytest.raises(ValueError, match="alternate"):
        vi.start_chat(a, [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}])
    with pytest.raises(ValueError, match="num_beams=1"):
        vi.start_chat(a).send("x", num_beams=2)


def test_a_session_on_the_generator_alone_answers_like_the_api(shapes_model, world_image):
    """ChatSession needs only a Generator (no SphinxVi): same greedy answer as the API's stateless path."""
    gen = Generator(shapes_model.model, shapes_model.processor)
    image = gen.processor.load(world_image)
    session = ChatSession(gen, image)
    assert session.image is image and session.key == image_key(image)  # loaded once, used as it is
    answer = session.send("Hình tròn màu đỏ ở đâu?", max_new_tokens=24)
    assert answer == gen.answer([image], ["Hình tròn màu đỏ ở đâu?"], max_new_tokens=24)[0]
    assert session.history == [("Hình tròn màu đỏ ở đâu?", answer)] and session.stats["turns"] == 1
