"""The server: transformers' serving app (`build_server`) with our model manager and chat handler, behind an
API-key check and a request-size limit, answering errors in OpenAI's error shape."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from transformers.cli.serving.server import build_server
from transformers.cli.serving.utils import EngineDeadError, GenerationState

from .config import ServeConfig
from .engine import SphinxViModelManager
from .handler import GroundedChatHandler

SERVED_ROUTES = ("/v1/chat/completions", "/v1/models", "/health")  # transformers' other routes serve other model kinds
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 413: "request_too_large",
                422: "invalid_request_error", 503: "service_unavailable"}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "code": status}}


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps(error_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI middleware: the API key (every route but /health) and the body-size limit, checked before the app reads."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_bytes: int) -> None:
        self.app, self.api_key, self.max_bytes = app, api_key, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"] != "/health":
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                await _send_error(send, 401, "missing or wrong API key (Authorization: Bearer <key>)")
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _send_error(send, 413, f"request body is {length} bytes, above the server's limit of {self.max_bytes}")
            return
        if length is None:  # chunked: read here, so that a body over the limit is refused before the app starts
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size, more = size + len(chunks[-1]), message.get("more_body", False)
                if size > self.max_bytes:
                    await _send_error(send, 413, f"request body is above the server's limit of {self.max_bytes} bytes")
                    return
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive`, with the body already read coming first."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def build_app(config: ServeConfig) -> FastAPI:
    """The FastAPI app serving `config.model` (loaded now, strictly, in the model's own process: a script calling this
    needs the `if __name__ == "__main__":` guard, as the process is spawned)."""
    state = GenerationState(continuous_batching=False)  # transformers batches continuously only text-only LLMs
    manager = SphinxViModelManager(config, state)
    chat = GroundedChatHandler(manager, state, config)
    app = build_server(manager, chat, None, None, None, None)  # type: ignore[arg-type]  # their routes are removed below
    ours = [r for r in app.router.routes if not str(getattr(r, "path", "")).startswith(("/v1", "/load", "/reset"))]
    app.router.routes = ours + [r for r in app.router.routes if getattr(r, "path", "") in SERVED_ROUTES]

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(ValueError)  # the request's fault, `generate`'s included (it crosses from the engine as one)
    async def _bad_request(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc)), status_code=400)

    @app.exception_handler(EngineDeadError)  # the model's process died: /health says so too
    async def _engine_dead(_request: Request, exc: EngineDeadError) -> JSONResponse:
        return JSONResponse(error_body(503, str(exc)), status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        message = "request body is not valid JSON" if first.get("type") == "json_invalid" else f"invalid request: {first.get('msg', exc)}"
        return JSONResponse(error_body(400, message), status_code=400)

    app.add_middleware(Gate, api_key=config.api_key, max_bytes=config.max_request_bytes)
    app.state.manager = manager
    return app


def serve(config: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    if config.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        print(f"warning: serving on {config.host} without --api-key: anyone who reaches the port can use the model")
    app = build_app(config)
    print(f"serving {config.name!r} on http://{config.host}:{config.port}/v1 (chat/completions, models; /health)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
