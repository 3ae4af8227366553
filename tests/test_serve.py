"""The OpenAI-compatible server: the `openai` client against it (text, image, streaming, the grounding field),
bad input answered with a clear 4xx while it keeps serving, the API key, the image policy and the one command."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from openai import OpenAI
from PIL import Image

from sphinx_vi import SphinxVi
from sphinx_vi.prompts import task_prompt
from sphinx_vi.serve import ServeConfig, build_app
from sphinx_vi.serve.sampling import SamplingError, check_generation_params
from sphinx_vi.serve.stops import StopCutter

EXAMPLE = Path(__file__).resolve().parents[1] / "sphinx_vi" / "assets" / "examples" / "world_shapes_1.png"
DETECT = task_prompt("detect", "vi", category="hình tròn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Running:
    def __init__(self, config: ServeConfig) -> None:
        self.server = uvicorn.Server(uvicorn.Config(build_app(config), host="127.0.0.1", port=config.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{config.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server():
    running = _Running(ServeConfig(port=_free_port(), max_new_tokens=128))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "shapes.png").write_bytes(EXAMPLE.read_bytes())
    running = _Running(ServeConfig(port=_free_port(), api_key="s3cret", image_root=root, max_request_bytes=2_000_000,
                                   max_new_tokens=24, served_model_name="demo"))
    running.root = root  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api():
    return SphinxVi.load("tiny-shapes")


def _data_url(path: Path = EXAMPLE) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _image_message(text: str, url: str | None = None) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url or _data_url()}}, {"type": "text", "text": text}]}]


def _client(server, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_models_and_health(server):
    assert [m.id for m in _client(server).models.list().data] == ["tiny-shapes"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_an_image_answer_carries_the_api_s_text_and_detections(server, api):
    reply = _client(server).chat.completions.create(model="tiny-shapes", messages=_image_message(DETECT), max_tokens=128)
    choice = reply.choices[0]
    expected = api.answer(EXAMPLE, "detect", "vi", category="hình tròn", max_new_tokens=128)
    assert choice.message.content == expected.text and expected.detections
    grounding = choice.model_extra["grounding"]
    assert grounding["image_size"] == list(Image.open(EXAMPLE).size)
    assert grounding["detections"] == json.loads(json.dumps([d.to_dict() for d in expected.detections]))
    assert reply.usage.prompt_tokens > api.processor.settings.tokens_per_image  # the visual tokens are in the prompt


def test_streaming_sends_the_same_answer_and_the_grounding_last(server):
    client = _client(server)
    whole = client.chat.completions.create(model="tiny-shapes", messages=_image_message(DETECT))
    chunks = list(client.chat.completions.create(model="tiny-shapes", messages=_image_message(DETECT), stream=True))
    assert len(chunks) > 3  # token by token, not one block
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    last = chunks[-1].choices[0]
    assert last.finish_reason in ("stop", "length")
    assert last.model_extra["grounding"] == whole.choices[0].model_extra["grounding"]


def test_text_only_chat_has_no_grounding(server):
    reply = _client(server).chat.completions.create(model="tiny-shapes", messages=[
        {"role": "system", "content": "Bạn là trợ lý."}, {"role": "user", "content": "Xin chào"}], max_tokens=8)
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].model_extra["grounding"] is None
    assert reply.usage.completion_tokens <= 8


def _post(server, body, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/chat/completions", content=content, timeout=120,
                      headers={"content-type": "application/json", **kw.pop("headers", {})}, **kw)


def _flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("body, status, says", [
    (b'{"messages": [{"role": "user", "content": "hi"}', 400, "not valid JSON"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "is not served here"),
    ({"messages": _image_message("hi", "data:text/plain;base64,aGVsbG8=")}, 400, "not an image"),
    ({"messages": _image_message("hi", "data:image/png;base64,@@@")}, 400, "not valid base64"),
    ({"messages": _image_message("hi", "data:image/png;base64," + base64.b64encode(b"not a png").decode())}, 400, "image_url"),
    ({"messages": _image_message("hi", "https://example.com/cat.jpg")}, 400, "does not fetch URLs"),
    ({"messages": _image_message("hi", "/etc/passwd")}, 400, "--image-root"),
    ({"messages": [{"role": "user", "content": "x" * 1_000_000}]}, 400, "above the server's limit"),
    ({"messages": [{"role": "user", "content": "xin chào " * 20_000}]}, 400, "context"),
    ({"messages": [{"role": "user", "content": "<image> hi"}]}, 400, "may not contain <image>"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, 400, "role"),
    ({"messages": []}, 400, "non-empty"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, 400, "max_tokens: -3 is out of range"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": 5}, 400, "stop"),
    ({"messages": [{"role": "user", "content": "hi"}], "no_such_field": 1}, 422, "Unexpected fields"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": ""}}]}]}, 400, "not served"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature: -1 is out of range"),
    ({"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": -2}, 400, "frequency_penalty"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999999": 5}}, 400, "not a token id"),
    ({"messages": [{"role": "user", "content": "hi"}], "generation_config": '{"num_beams": 10000}'}, 400, "num_beams: 10000 is out of range"),
    ({"messages": [{"role": "user", "content": "hi"}], "generation_config": '{"top_k": "many"}'}, 400, "top_k: expected an integer"),
    ({"messages": [{"role": "user", "content": "hi"}], "generation_config": '{"trust_remote_code": true}'}, 400, "cannot be set"),
    ({"messages": [{"role": "user", "content": "hi"}], "generation_config": "[1, 2]"}, 400, "JSON object"),
    ({"messages": [{"role": "user", "content": "hi"}], "generation_config": '{"num_beams": 2}', "stream": True}, 400, "cannot stream"),
])
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server, body, status, says):
    reply = _post(server, body)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]["message"]
    ok = _post(server, {"messages": [{"role": "user", "content": "Xin chào"}], "max_tokens": 4})
    assert ok.status_code == 200


def test_beam_search_within_the_bound_is_served(server):
    reply = _post(server, {"messages": _image_message(DETECT), "max_tokens": 48, "generation_config": '{"num_beams": 2}'})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["grounding"]["detections"]


def test_a_40_megapixel_image_is_refused_before_decoding(server):
    url = "data:image/png;base64," + base64.b64encode(_flat_png(8000, 5000)).decode()  # 40 MP, small as PNG
    reply = _post(server, {"messages": _image_message("hi", url)})
    assert reply.status_code == 413 and "above the limit" in reply.json()["error"]["message"]


def test_two_images_in_one_conversation_are_refused(server):
    messages = _image_message("hi") + [{"role": "assistant", "content": "ok"}] + _image_message("again")
    reply = _post(server, {"messages": messages})
    assert reply.status_code == 400 and "one image per conversation" in reply.json()["error"]["message"]


def test_the_api_key_is_required_except_for_health(guarded):
    assert httpx.get(guarded.url + "/health").status_code == 200
    assert httpx.get(guarded.url + "/v1/models").status_code == 401
    assert httpx.get(guarded.url + "/v1/models", headers={"authorization": "Bearer nope"}).status_code == 401
    with pytest.raises(Exception, match="API key"):
        _client(guarded, "wrong").models.list()
    assert [m.id for m in _client(guarded, "s3cret").models.list().data] == ["demo"]


def test_local_images_come_only_from_inside_the_image_root(guarded):
    client = _client(guarded, "s3cret")
    reply = client.chat.completions.create(model="demo", messages=_image_message(DETECT, "shapes.png"))
    assert reply.choices[0].model_extra["grounding"]["image_size"] == list(Image.open(EXAMPLE).size)
    outside = _post(guarded, {"messages": _image_message("hi", "../../etc/passwd")}, headers={"authorization": "Bearer s3cret"})
    assert outside.status_code == 400 and "outside the server's image root" in outside.json()["error"]["message"]


def test_a_body_over_the_size_limit_is_refused_unread(guarded):
    big = {"messages": _image_message("hi", "data:image/png;base64," + "A" * 3_000_000)}
    reply = _post(guarded, big, headers={"authorization": "Bearer s3cret"})
    assert reply.status_code == 413 and "limit" in reply.json()["error"]["message"]


def test_a_chunked_body_is_counted_as_it_arrives(guarded):
    def post(text: str, copies: int) -> httpx.Response:
        body = (b'{"max_tokens": 2, "messages": [{"role": "user", "content": "', *[text.encode()] * copies, b'"}]}')
        return httpx.post(guarded.url + "/v1/chat/completions", content=iter(body), timeout=60,  # no Content-Length: chunked
                          headers={"content-type": "application/json", "authorization": "Bearer s3cret"})

    over = post("x" * 100_000, 21)
    assert over.status_code == 413 and "limit" in over.json()["error"]["message"]
    assert post("Xin chào ", 2).status_code == 200


@pytest.mark.parametrize("body, says", [
    ({"seed": True}, "seed: expected an integer"),
    ({"max_tokens": 0}, "max_tokens: 0 is out of range (expected ≥ 1)"),
    ({"max_completion_tokens": "64"}, "max_completion_tokens: expected an integer"),
    ({"top_p": 0}, "top_p: 0 is out of range (expected > 0 and ≤ 1)"),
    ({"generation_config": '{"temperature": NaN}'}, "finite"),
    ({"generation_config": '{"do_sample": 1}'}, "expected true or false"),
    ({"generation_config": '{"num_beams": 5}'}, "≤ 4"),
    ({"logit_bias": {"-1": 1}}, "not a token id"),
    ({"logit_bias": {"3": 1000}}, "logit_bias[3]: 1000 is out of range"),
])
def test_generation_params_outside_their_types_and_ranges_are_named(body, says):
    with pytest.raises(SamplingError, match=re.escape(says)):
        check_generation_params(body, vocab_size=100, max_beams=4)
    check_generation_params({"temperature": 0.7, "seed": 3, "logit_bias": {"3": -100},
                             "generation_config": '{"num_beams": 4, "top_k": 0, "repetition_penalty": 1.2}'}, 100, 4)


def test_stop_strings_are_cut_across_streamed_pieces():
    cutter = StopCutter(["\n###"])
    sent = [cutter.feed(p) for p in ("Có ", "hai\n#", "## Human: thêm")]
    assert "".join(sent) + cutter.finish() == "Có hai" == cutter.text
    assert "#" not in "".join(sent)
    plain = StopCutter([])
    assert plain.feed("a") + plain.feed("b") + plain.finish() == "ab"


def test_the_serve_command_starts_a_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sphinx_vi", "serve", "--port", str(port), "--max-new-tokens", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "serve did not come up"
            time.sleep(0.3)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                           json={"model": "tiny-shapes", "messages": _image_message(DETECT)})
        assert reply.status_code == 200 and reply.json()["choices"][0]["grounding"]["image_size"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_32_concurrent_clients_are_all_served_with_the_sequential_answers(server):
    from concurrent.futures import ThreadPoolExecutor

    prompts = [task_prompt("detect", "vi", category=c) for c in ("hình tròn", "hình vuông", "hình tam giác", "hình sao")]
    bodies = [{"model": "tiny-shapes", "messages": _image_message(prompts[i % 4]), "max_tokens": 64} for i in range(32)]
    sequential = {p: _post(server, b).json()["choices"][0]["message"]["content"] for p, b in zip(prompts, bodies)}
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda b: _post(server, b), bodies))
    assert [r.status_code for r in replies] == [200] * 32
    answers = [r.json()["choices"][0]["message"]["content"] for r in replies]
    assert answers == [sequential[prompts[i % 4]] for i in range(32)]  # none lost, none mixed up
    assert len({r.json()["id"] for r in replies}) == 32
