"""The HTTP backend: a running radixlm (or SGLang) server's native API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from radixlm.backend.http_client import HttpClient
from radixlm.backend.native import NativeBackend


class RuntimeEndpoint(NativeBackend):
    """Talks to `base_url` exactly as SGLang's `RuntimeEndpoint` does.

    The chat template comes from `chat_template_name`, else from the server's /get_model_info.
    """

    support_concate_and_append = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        verify: bool | str | None = None,
        chat_template_name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = HttpClient(self.base_url, api_key=api_key, verify=verify)
        super().__init__(self.client.get("/get_model_info"), chat_template_name)

    def _generate(self, body: dict) -> Any:
        return self.client.post("/generate", body)

    def _generate_events(self, body: dict) -> Iterator[dict]:
        return self.client.post_events("/generate", body)

    def concatenate_and_append(self, src_sids: list[str], dst_sid: str) -> None:
        # The route's name is SGLang's spelling.
        self.client.post("/concate_and_append_request", {"src_rids": src_sids, "dst_rid": dst_sid})

    def flush_cache(self) -> None:
        self.client.post("/flush_cache")

    def get_server_info(self) -> dict:
        return self.client.get("/get_server_info")

    def __repr__(self) -> str:
        return f"RuntimeEndpoint({self.base_url!r})"
