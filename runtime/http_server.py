"""The HTTP app: SGLang's native API and the operational endpoints. Never imports torch."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.generate_request import parse_generate
from radixlm.runtime.native_api import RequestFailedError, generate, generate_stream
from radixlm.runtime.sampling_params import SamplingParams
from radixlm.runtime.tokenizer_manager import ServerOverloadedError, TokenizerManager

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
DISCONNECT_POLL_S = 0.2
UNPROTECTED_PATHS = frozenset({"/health"})


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int, message: str, param: str | None = None, headers=None
) -> JSONResponse:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "request_too_large",
        503: "service_unavailable",
    }
    body = {
        "error": {
            # Messages may quote client input; keep them encodable whatever it held.
            "message": _encodable(message),
            "type": kinds.get(status, "server_error"),
            "param": None if param is None else _encodable(param),
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    too_large = InvalidRequestError(f"request body larger than {MAX_BODY_BYTES} bytes", "body", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large  # refused before reading a byte of it
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
        where = lone_surrogate_path(body, "body")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}", "body") from None
    except RecursionError:
        raise InvalidRequestError("the JSON body is nested too deeply", "body") from None
    if where is not None:
        # JSON escapes like "\ud800" decode to strings no tokenizer or UTF-8 encoder accepts.
        raise InvalidRequestError(f"{where} contains a lone surrogate (invalid Unicode)", where)
    return body


def lone_surrogate_path(value: Any, path: str) -> str | None:
    """Path of the first string (value or key) that is not encodable as UTF-8, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            name = key if path == "body" else f"{path}.{key}"
            found = lone_surrogate_path(key, name) or lone_surrogate_path(item, name)
            if found is not None:
                return found
    return None


async def until_disconnected(request: Request) -> None:
    # Starlette cancels streaming handlers on disconnect, but not plain ones: poll.
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def cancel_on_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Runs ``work``; if the client goes away first, cancels it (which aborts its requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        return Response(status_code=499)
    return task.result()


def sse(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    async def encode() -> AsyncIterator[bytes]:
        async for event in events:
            yield b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return encode()


async def start_stream(events: AsyncIterator[dict], request: Request) -> Response:
    """Waits for the first event so an early failure is still a proper 4xx, then streams.
    A client that leaves during the wait (queued, compiling a grammar) aborts the request."""

    async def first_event() -> dict | None:
        try:
            return await events.__anext__()
        except StopAsyncIteration:
            return None

    first = await cancel_on_disconnect(request, first_event())
    if isinstance(first, Response):
        return first

    async def chained() -> AsyncIterator[dict]:
        if first is not None:
            yield first
        try:
            async for event in events:
                yield event
        except RequestFailedError as exc:
            # Headers are sent: the failure becomes an in-stream error event, then [DONE].
            yield {
                "error": {"message": exc.message, "type": "server_error", "code": exc.status_code}
            }

    return StreamingResponse(sse(chained()), media_type="text/event-stream")


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every route but /health.

    A plain ASGI middleware on purpose: Starlette's ``@app.middleware("http")`` wraps
    ``receive`` so that ``request.is_disconnected()`` never sees a client leave, and
    non-streaming requests would then run to the end for nobody.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNPROTECTED_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(
                    401, "invalid or missing API key (Authorization: Bearer ...)"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    manager: TokenizerManager,
    model_info: dict[str, Any],
    server_info: dict[str, Any],
    api_key: str | None = None,
    incremental_streaming_output: bool = False,
    extra_routes: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    app = FastAPI(title="radixlm", docs_url=None, redoc_url=None)

    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)

    @app.exception_handler(InvalidRequestError)
    async def invalid_request(_: Request, exc: InvalidRequestError):
        return error_response(exc.status_code, exc.message, exc.field)

    @app.exception_handler(RequestFailedError)
    async def failed_request(_: Request, exc: RequestFailedError):
        return error_response(exc.status_code, exc.message)

    @app.exception_handler(ServerOverloadedError)
    async def overloaded(_: Request, exc: ServerOverloadedError):
        return error_response(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.on_event("startup")
    async def start_manager() -> None:
        manager.start()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if manager.accepting else 503)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        parsed = parse_generate(
            {"input_ids": [0], "sampling_params": {"max_new_tokens": 1, "temperature": 0}}
        )
        await generate(manager, parsed)
        return Response(status_code=200)

    @app.post("/generate")
    async def generate_route(request: Request):
        parsed = parse_generate(await read_json(request))
        if parsed.stream:
            return await start_stream(
                generate_stream(manager, parsed, incremental_streaming_output), request
            )
        result = await cancel_on_disconnect(request, generate(manager, parsed))
        return result if isinstance(result, Response) else JSONResponse(result)

    if manager.metrics is not None:

        @app.get("/metrics")
        async def metrics() -> Response:
            state = await manager.scheduler_state()
            text = manager.metrics.render(state, manager.num_inflight)
            return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/get_model_info")
    @app.get("/model_info")
    async def get_model_info():
        return model_info

    @app.get("/server_info")
    @app.get("/get_server_info")
    async def get_server_info():
        state = await manager.scheduler_state()
        return {**server_info, "internal_states": [state]}

    @app.get("/get_server_args")
    async def get_server_args():
        return server_info

    @app.get("/scheduler_state")
    async def scheduler_state():
        """Counters and the KV/radix invariant check (`ok`), for operators and tests."""
        return await manager.scheduler_state()

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache():
        reply = await manager.flush_cache()
        if not reply.success:
            return error_response(400, reply.message)
        return Response("Cache flushed.\n", status_code=200)

    @app.post("/abort_request")
    async def abort_request(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body must be a JSON object", "body")
        rid, abort_all = body.get("rid", ""), bool(body.get("abort_all", False))
        if not abort_all and (not isinstance(rid, str) or not rid):
            raise InvalidRequestError("rid (a string) or abort_all: true is required", "rid")
        manager.abort(rid or "", abort_all)
        return Response(status_code=200)

    @app.post("/concate_and_append_request")
    async def concate_and_append_request():
        # SGLang's client sends fork ids the server never saw; the text is already joined on
        # the client side, so acknowledging is the compatible behaviour.
        return {}

    if extra_routes is not None:
        extra_routes(app)
    return app


def make_grammar_validator(
    backend: str, compact_json: bool = False
) -> Callable[[SamplingParams], None]:
    """Checks regex / JSON-schema specs in this process, before they reach the scheduler, by
    the rules of the scheduler's grammar ``backend``."""
    from radixlm.constrained import GrammarError, GrammarSpec, validate_spec

    def validate(params: SamplingParams) -> None:
        for kind in ("regex", "json_schema", "ebnf"):
            value = getattr(params, kind)
            if value is None:
                continue
            try:
                validate_spec(GrammarSpec(kind=kind, value=value), backend, compact_json)
            except GrammarError as exc:
                raise InvalidRequestError(
                    f"sampling_params.{kind} is invalid: {exc}", f"sampling_params.{kind}"
                ) from None

    return validate
