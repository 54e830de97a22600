"""Streaming: print text as it is generated, for the whole program or one variable.

python examples/streaming.py [--url URL]
"""

from __future__ import annotations

import asyncio
from typing import Any

from example_backend import run_example

import radixlm as rl


@rl.function
def story(s, topic):
    s += rl.user("Write two sentences about " + topic + ".")
    s += rl.assistant(rl.gen("story", max_tokens=24))


async def stream_async(backend: Any) -> list[str]:
    state = story.run("the sea", temperature=0, stream=True, backend=backend)
    return [chunk async for chunk in state.text_async_iter("story")]


def main(backend: Any) -> dict[str, Any]:
    state = story.run("the moon", temperature=0, stream=True, backend=backend)
    deltas = []
    for delta in state.text_iter("story"):
        print(delta, end="", flush=True)
        deltas.append(delta)
    print()
    async_deltas = asyncio.run(stream_async(backend))
    print("".join(async_deltas))
    return {"state": state, "deltas": deltas, "async_deltas": async_deltas}


if __name__ == "__main__":
    run_example(main, __doc__)
