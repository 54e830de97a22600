"""The in-process backend: programs drive a runtime engine directly, with no HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from radixlm.backend.native import NativeBackend


class Engine(NativeBackend):
    """Starts `radixlm.runtime.engine.Engine(**server_args)` in this process.

    It takes the same bodies as POST /generate, so programs behave as with `RuntimeEndpoint`.
    Call `shutdown()` (or use it as a context manager) to stop the engine's processes.
    """

    def __init__(self, chat_template_name: str | None = None, **server_args: Any) -> None:
        # Imported here: the language never loads the runtime (and torch) unless asked to.
        from radixlm.runtime.engine import Engine as RuntimeEngine

        self.engine = RuntimeEngine(**server_args)
        super().__init__(self.engine.get_model_info(), chat_template_name)

    def _generate(self, body: dict) -> Any:
        return self.engine.generate(body)

    def _generate_events(self, body: dict) -> Iterator[dict]:
        return self.engine.generate_stream(body)

    def flush_cache(self) -> None:
        self.engine.flush_cache()

    def get_server_info(self) -> dict:
        return self.engine.get_server_info()

    def shutdown(self) -> None:
        self.engine.shutdown()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
