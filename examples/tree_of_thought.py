"""Branch-solve-merge: fork the prompt into several solution branches, then judge them.

Forking sends the shared prompt once, so every branch reuses its cached prefix.

    python examples/tree_of_thought.py [--url URL]
"""

from __future__ import annotations

from typing import Any

from example_backend import run_example

import radixlm as rl

QUESTION = "A farmer has 3 fields with 4 cows each. How many cows does the farmer have?"
APPROACHES = ["count the cows field by field", "multiply fields by cows per field", "estimate"]


@rl.function
def branch_solve_merge(s, question):
    s += "Question: " + question + "\n"
    branches = s.fork(len(APPROACHES))
    for branch, approach in zip(branches, APPROACHES, strict=True):
        branch += "Approach: " + approach + ".\nSolution:"
        branch += rl.gen("solution", max_tokens=24, stop="\n")
    branches.join()
    # Merge: show every branch's solution, then let the model pick the most convincing one.
    for i, solution in enumerate(s["solution"]):
        s += f"Solution {i + 1}:{solution}\n"
    s += "The most convincing solution is number "
    s += rl.select("best", choices=[str(i + 1) for i in range(len(APPROACHES))])
    s += ".\nFinal answer:" + rl.gen("answer", max_tokens=12, stop="\n")


def main(backend: Any) -> rl.ProgramState:
    state = branch_solve_merge.run(QUESTION, temperature=0, backend=backend)
    for approach, solution in zip(APPROACHES, state["solution"], strict=True):
        print(f"[{approach}]{solution}")
    print(f"best: {state['best']}, final answer:{state['answer']}")
    return state


if __name__ == "__main__":
    run_example(main, __doc__)
