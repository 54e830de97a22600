"""Classification with select: the model scores each label; no free-form generation.

python examples/select_classification.py [--url URL]
"""

from __future__ import annotations

from typing import Any

from example_backend import run_example

import radixlm as rl

LABELS = ["positive", "negative"]

REVIEWS = [
    "I loved this film, the acting was wonderful.",
    "Terrible service, the food was cold and the waiter was rude.",
    "An absolute delight from start to finish.",
    "I want my money back; it broke after one day.",
]


@rl.function
def classify(s, review):
    s += "Decide whether each review is positive or negative.\n\n"
    s += "Review: The best purchase I have made this year.\nSentiment: positive\n\n"
    s += "Review: It stopped working and support never answered.\nSentiment: negative\n\n"
    s += "Review: " + review + "\nSentiment: "
    s += rl.select("label", choices=LABELS)


def main(backend: Any) -> list[str]:
    states = classify.run_batch([{"review": r} for r in REVIEWS], backend=backend)
    labels = [state["label"] for state in states]
    for review, label in zip(REVIEWS, labels, strict=True):
        print(f"{label:>8}  {review}")
    return labels


if __name__ == "__main__":
    run_example(main, __doc__)
