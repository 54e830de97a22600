"""Quick start: a two-turn chat program with gen, run once against a server.

python examples/quick_start.py [--url http://127.0.0.1:30000]
"""

from __future__ import annotations

from typing import Any

from example_backend import run_example

import radixlm as rl


@rl.function
def multi_turn_question(s, question_1, question_2):
    s += rl.system("You are a helpful assistant. Answer in one short sentence.")
    s += rl.user(question_1)
    s += rl.assistant(rl.gen("answer_1", max_tokens=16, stop="\n"))
    s += rl.user(question_2)
    s += rl.assistant(rl.gen("answer_2", max_tokens=16, stop="\n"))


def main(backend: Any) -> rl.ProgramState:
    state = multi_turn_question.run(
        question_1="What is the capital of France?",
        question_2="And what river flows through it?",
        temperature=0,
        backend=backend,
    )
    for message in state.messages():
        print(f"{message['role']:>9}: {message['content']}")
    return state


if __name__ == "__main__":
    run_example(main, __doc__)
