"""OpenAI chat messages → the conversation our chat template renders, and the image it is about."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from ..text.tokens import IMAGE_TOKEN
from .request_images import RequestImageError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class MessageError(ValueError):
    """A request's `messages` this model cannot answer; the message says which part and why (a 400)."""


def _parts(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise MessageError(f"messages[{index}].content: expected a string or a list of content parts")
    return content


def _image_url(part: dict[str, Any], where: str) -> str:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise MessageError(f"{where}: an image_url part needs image_url.url")
    return url


def read_messages(messages: Any, load_image: Callable[[str], Image.Image], max_chars: int) -> tuple[list[dict[str, str]], Image.Image | None]:
    """(role/content dicts with `<image>` where the image goes, the image or None).

    One image per conversation (the model answers about one image): it goes before the text of
    the message that carries it, as the models were trained. Text may not contain `<image>` itself,
    nor be longer than `max_chars` in all.
    """
    if not isinstance(messages, list) or not messages:
        raise MessageError("messages: expected a non-empty list")
    conversation: list[dict[str, str]] = []
    image: Image.Image | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise MessageError(f"messages[{i}]: expected an object with role and content")
        role = ROLES.get(str(message.get("role")))
        if role is None:
            raise MessageError(f"messages[{i}].role: {message.get('role')!r} is not one of {', '.join(ROLES)}")
        texts: list[str] = []
        has_image = False
        for j, part in enumerate(_parts(message, i)):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise MessageError(f"{where}: a text part needs a text string")
                if IMAGE_TOKEN in text:
                    raise MessageError(f"{where}: text may not contain {IMAGE_TOKEN}; send images as image_url parts")
                texts.append(text)
            elif kind == "image_url":
                if role != "user":
                    raise MessageError(f"{where}: only user messages may carry images")
                if image is not None:
                    raise MessageError(f"{where}: one image per conversation (this model answers about one image)")
                image = load_image(_image_url(part, where))
                has_image = True
            else:
                raise MessageError(f"{where}: content type {kind!r} is not served (text and image_url are)")
        content = "\n".join(texts)
        conversation.append({"role": role, "content": f"{IMAGE_TOKEN}\n{content}" if has_image else content})
    chars = sum(len(m["content"]) for m in conversation)
    if chars > max_chars:
        raise MessageError(f"messages: {chars:,} characters of text, above the server's limit of {max_chars:,} "
                           "(no answer fits the model's context after that much text)")
    if conversation[-1]["role"] != "user":
        raise MessageError("messages: the last message must be the user's")
    return conversation, image


__all__ = ["MessageError", "RequestImageError", "read_messages"]
