"""Running a group of requests (the choices of one OpenAI call): to the end, or merged into one
stream of updates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from radixlm.runtime.io_struct import TextUpdate
from radixlm.runtime.native_api import RequestFailedError
from radixlm.runtime.tokenizer_manager import RequestState, TokenizerManager


def failure_of(update: TextUpdate) -> RequestFailedError | None:
    """An aborted request is an error to OpenAI clients: finish_reason has no "abort"."""
    finish = update.finish
    if finish is None or finish.type != "abort":
        return None
    status = finish.status_code if finish.status_code in (400, 500) else 503
    return RequestFailedError(f"request aborted: {finish.message or 'unknown reason'}", status)


async def run_to_end(manager: TokenizerManager, states: list[RequestState]) -> None:
    """Waits for every request of the group; raises the first failure (after all finished)."""

    async def one(state: RequestState) -> None:
        async for _ in manager.updates(state):
            pass

    await asyncio.gather(*(one(s) for s in states))
    for state in states:
        failure = failure_of(state.last)
        if failure is not None:
            raise failure


async def merged_updates(
    manager: TokenizerManager, states: list[RequestState]
) -> AsyncIterator[tuple[int, TextUpdate]]:
    """(choice index, update) as they arrive, interleaved across the group.

    Leaving early (client gone, error) cancels the readers, which aborts unfinished requests.
    """
    queue: asyncio.Queue = asyncio.Queue()

    async def read(index: int, state: RequestState) -> None:
        async for update in manager.updates(state):
            queue.put_nowait((index, update))

    readers = [asyncio.ensure_future(read(i, s)) for i, s in enumerate(states)]
    remaining = len(states)
    try:
        while remaining:
            index, update = await queue.get()
            if update.finish is not None:
                remaining -= 1
            yield index, update
    finally:
        # No await here: inside a cancelled scope every await would be cancelled again.
        for reader in readers:
            reader.cancel()
