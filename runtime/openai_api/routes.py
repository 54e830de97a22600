"""Registers the OpenAI-compatible routes on the HTTP app (through create_app's extra_routes)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi import FastAPI, Request

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.http_server import read_json
from radixlm.runtime.openai_api.chat import create_chat_completion
from radixlm.runtime.openai_api.common import ServingContext
from radixlm.runtime.openai_api.completions import create_completion
from radixlm.runtime.openai_api.logprobs import TokenTexts
from radixlm.runtime.tokenizer_manager import TokenizerManager


def register_openai_routes(
    app: FastAPI,
    manager: TokenizerManager,
    served_model_name: str,
    context_len: int,
    model_aliases: Iterable[str] = (),
) -> None:
    """``model_aliases``: other names a request may use for the model (e.g. its path)."""
    ctx = ServingContext(
        manager=manager,
        model_names=frozenset({served_model_name, *model_aliases}),
        served_model_name=served_model_name,
        context_len=context_len,
        token_texts=TokenTexts(manager.tokenizer),
    )
    card = {
        "id": served_model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "radixlm",
        "root": served_model_name,
        "max_model_len": context_len,
    }

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await create_completion(ctx, request, await read_json(request))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await create_chat_completion(ctx, request, await read_json(request))

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str):
        if model not in ctx.model_names:
            raise InvalidRequestError(f"The model `{model}` does not exist.", "model", 404)
        return card
