"""The OpenAI-compatible API: /v1/completions, /v1/chat/completions, /v1/models."""

from radixlm.runtime.openai_api.routes import register_openai_routes

__all__ = ["register_openai_routes"]
