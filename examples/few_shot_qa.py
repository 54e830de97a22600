"""Few-shot question answering over a batch: the shared examples are sent (and cached) once.

python examples/few_shot_qa.py [--url URL]
"""

from __future__ import annotations

from typing import Any

from example_backend import run_example

import radixlm as rl

EXAMPLES = """The following are questions with short answers.

Q: What is the capital of Italy?
A: Rome
Q: What is the capital of Germany?
A: Berlin
Q: What is the capital of Spain?
A: Madrid
"""

QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What is the capital of the United Kingdom?",
    "What is the capital of China?",
]


@rl.function
def few_shot_qa(s, question):
    s += EXAMPLES
    s += "Q: " + question + "\n"
    s += "A:" + rl.gen("answer", max_tokens=8, stop="\n")


def main(backend: Any) -> list[str]:
    states = few_shot_qa.run_batch(
        [{"question": q} for q in QUESTIONS], temperature=0, backend=backend, progress_bar=True
    )
    answers = [state["answer"].strip() for state in states]
    for question, answer in zip(QUESTIONS, answers, strict=True):
        print(f"{question} -> {answer}")
    return answers


if __name__ == "__main__":
    run_example(main, __doc__)
