"""Chat templates of the systems sphinx_vi reproduces, with the stop strings each was trained to end on.

A checkpoint answers well only in the prompt format it was trained with, so the format is part of
the checkpoint: a tokenizer's own template is used, or the one the model config names
(`SphinxViConfig.chat_template`); a tokenizer with neither is refused, never given a substitute.
Each template is Jinja over `messages` (role/content dicts, an optional leading system message),
marks assistant text with `{% generation %}` (the training loss mask) and places the image where
the original system does: at the `<image>` of the first user turn, or (SPHINX) right after BOS.

| name | system | format |
| --- | --- | --- |
| `vistral` | Vistral-7B-Chat, our tiny models | `<s>[INST] <<SYS>>…<</SYS>> q [/INST] a</s>` per turn |
| `vistral_v` | Vistral-V (LLaVA's `vistral` conversation) | LLaMA-2 style, Vietnamese system prompt, `</s>` after answers |
| `vicuna_v1` | LLaVA-1.5 | `<s>{system} USER: <image>\\nq ASSISTANT: a</s>USER: …` |
| `sphinx` | SPHINX (LLaMA2-Accessory `conv_v1_2`) | `<s><image>{system}\\n\\n### Human: q\\n### Assistant: a\\n###…`, stop `\\n###` |
"""

from __future__ import annotations

from dataclasses import dataclass

from .tokens import IMAGE_TOKEN


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    jinja: str
    stop_strings: tuple[str, ...] = ()  # besides EOS: text that ends an answer (cut from the decoded answer)


class MissingChatTemplateError(ValueError):
    """A tokenizer without a chat template, and no template named in the model config."""


_SYSTEM_FIRST = (  # a leading system message becomes ns.system (else the template's default)
    "{%- set ns = namespace(system=DEFAULT) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
)

VISTRAL = ChatTemplate("vistral", (
    _SYSTEM_FIRST.replace("DEFAULT", "''")
    + "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ bos_token + '[INST] ' }}"
    "{%- if loop.first and ns.system -%}{{ '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' }}{%- endif -%}"
    "{{ message['content'] | trim }}{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ' }}{% generation %}{{ message['content'] | trim }}{{ eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
))

# Vistral-V's `vistral` conversation (LLaVA SeparatorStyle.LLAMA_2, sep "", sep2 "</s>"): the system
# prompt wraps the first user turn, BOS only at the start, " answer </s>" after each answer.
VISTRAL_V_SYSTEM = ("Cuộc trò chuyện giữa một người dùng tò mò và trợ lý trí tuệ nhân tạo."
                    "Trợ lý đưa ra câu trả lời hữu ích, chi tiết và lịch sự cho các câu hỏi của người dùng.")
VISTRAL_V = ChatTemplate("vistral_v", (
    _SYSTEM_FIRST.replace("DEFAULT", repr(VISTRAL_V_SYSTEM))
    + "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '[INST] ' }}"
    "{%- if loop.first and ns.system -%}{{ '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' }}{%- endif -%}"
    "{{ message['content'] }}{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ' }}{% generation %}{{ message['content'] }}{{ ' ' + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
))

# LLaVA-1.5's `vicuna_v1` (SeparatorStyle.TWO, sep " ", sep2 "</s>").
VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")
VICUNA_V1 = ChatTemplate("vicuna_v1", (
    _SYSTEM_FIRST.replace("DEFAULT", repr(VICUNA_V1_SYSTEM))
    + "{{ bos_token + ns.system + ' ' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ 'USER: ' + message['content'] + ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
))

# SPHINX's `conv_v1_2`: the image block right after BOS, then the system prompt and `###` turns.
SPHINX_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
SPHINX = ChatTemplate("sphinx", (
    _SYSTEM_FIRST.replace("DEFAULT", repr(SPHINX_SYSTEM))
    + "{%- set image = namespace(n=0) -%}"
    "{%- for message in messages -%}{%- set image.n = image.n + (message['content'].split('" + IMAGE_TOKEN + "') | length) - 1 -%}"
    "{%- endfor -%}"
    "{{ bos_token }}{{ '" + IMAGE_TOKEN + "' * image.n }}{{ ns.system + '\\n\\n###' }}"
    "{%- for message in messages -%}"
    "{%- set text = message['content'].replace('" + IMAGE_TOKEN + "\\n', '').replace('" + IMAGE_TOKEN + "', '') -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ ' Human: ' + text + '\\n###' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' Assistant: ' }}{% generation %}{{ text + '\\n###' }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' Assistant:' }}{%- endif -%}"
), stop_strings=("\n###",))

TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in (VISTRAL, VISTRAL_V, VICUNA_V1, SPHINX)}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def template_of(jinja: str | None) -> ChatTemplate | None:
    """The registered template whose Jinja is `jinja` (how a saved tokenizer's template is recognised)."""
    return next((t for t in TEMPLATES.values() if t.jinja == jinja), None)
