"""Multi-turn chat: a conversation grows turn by turn in one program; messages() exports it.

python examples/multi_turn_chat.py [--url URL]
"""

from __future__ import annotations

from typing import Any

from example_backend import run_example

import radixlm as rl

TURNS = [
    "Hi! Can you suggest a name for a cat?",
    "Why that name?",
    "Suggest one more, please.",
]


@rl.function
def chat(s, turns):
    s += rl.system("You are a friendly assistant. Keep answers under two sentences.")
    for i, turn in enumerate(turns):
        with s.user():
            s += turn
        with s.assistant():
            s += rl.gen(f"reply_{i}", max_tokens=16, stop="\n")


def main(backend: Any) -> list[dict]:
    state = chat.run(TURNS, temperature=0, backend=backend)
    messages = state.messages()
    for message in messages:
        print(f"{message['role']:>9}: {message['content']}")
    return messages


if __name__ == "__main__":
    run_example(main, __doc__)
