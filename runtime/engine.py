"""An in-process engine: the same scheduler and detokenizer processes as the server, no HTTP.

``Engine(**server_args).generate(body)`` takes and returns the JSON of `POST /generate`; the
tokenizer manager runs on a private asyncio loop in a background thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from radixlm.runtime import native_api
from radixlm.runtime.generate_request import parse_generate
from radixlm.runtime.launcher import ServerProcesses
from radixlm.runtime.server import build_manager, build_model_info
from radixlm.runtime.server_args import ServerArgs

_END = object()


class Engine:
    def __init__(self, **server_args: Any) -> None:
        self.args = ServerArgs(**server_args)
        self._processes = ServerProcesses(self.args)
        self._processes.start()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="radixlm-engine", daemon=True
        )
        self._thread.start()
        self.manager = build_manager(self.args, self._processes)
        self._run(self._start_manager())
        self._model_info = build_model_info(self._processes, self.manager.tokenizer)

    async def _start_manager(self) -> None:
        self.manager.start()

    async def _close_manager(self) -> None:
        self.manager.close()

    def _run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, body: dict) -> dict | list[dict]:
        """Same semantics and JSON as a non-streaming `POST /generate`."""
        parsed = parse_generate({**body, "stream": False})
        return self._run(native_api.generate(self.manager, parsed))

    def generate_stream(self, body: dict) -> Iterator[dict]:
        """Yields the events a streaming `POST /generate` would send (cumulative text)."""
        parsed = parse_generate({**body, "stream": True})
        events: queue.Queue = queue.Queue()

        async def pump() -> None:
            try:
                async for event in native_api.generate_stream(self.manager, parsed):
                    events.put(event)
            except BaseException as exc:  # surfaces in the caller's thread
                events.put(exc)
            finally:
                events.put(_END)

        asyncio.run_coroutine_threadsafe(pump(), self._loop)
        while (item := events.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def get_model_info(self) -> dict:
        return dict(self._model_info)

    def get_server_info(self) -> dict:
        state = self._run(self.manager.scheduler_state())
        return {**self.args.to_dict(), **self._processes.info, "internal_states": [state]}

    def flush_cache(self) -> None:
        reply = self._run(self.manager.flush_cache())
        if not reply.success:
            raise RuntimeError(reply.message)

    def shutdown(self) -> None:
        if self._thread.is_alive():
            self._run(self._close_manager())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._processes.stop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
