"""A small JSON-over-HTTP client with server-sent-event streaming, used by the HTTP backends.

`requests` is imported on first use so that `import radixlm` stays fast. Each thread gets its own
session (connection reuse without sharing a session between threads).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any


class BackendError(RuntimeError):
    """The server answered with an error status (or an error event inside a stream)."""

    def __init__(self, status_code: int, detail: Any, url: str) -> None:
        super().__init__(f"{url} -> HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class HttpClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        verify: bool | str | None = None,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = True if verify is None else verify
        # Generation can take arbitrarily long; only the connection attempt is bounded.
        self.timeout = (connect_timeout_s, None)
        self._local = threading.local()

    def get(self, path: str) -> Any:
        return self._decode(self._request("GET", path, None, stream=False))

    def post(self, path: str, body: dict | None = None) -> Any:
        return self._decode(self._request("POST", path, body, stream=False))

    def post_events(self, path: str, body: dict) -> Iterator[dict]:
        """POSTs and yields each `data: {json}` event until `data: [DONE]`."""
        response = self._request("POST", path, body, stream=True)
        with response:
            for line in response.iter_lines(decode_unicode=False):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                event = json.loads(payload)
                if isinstance(event, dict) and "error" in event:
                    raise BackendError(response.status_code, event["error"], response.url)
                yield event

    def _request(self, method: str, path: str, body: dict | None, stream: bool) -> Any:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        response = self._session().request(
            method,
            self.base_url + path,
            json=body,
            headers=headers,
            stream=stream,
            timeout=self.timeout,
            verify=self.verify,
        )
        if response.status_code != 200:
            try:
                detail = response.json()
            except ValueError:
                detail = response.text
            response.close()
            raise BackendError(response.status_code, detail, response.url)
        return response

    @staticmethod
    def _decode(response: Any) -> Any:
        try:
            return response.json()
        except ValueError:
            return response.text

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session
