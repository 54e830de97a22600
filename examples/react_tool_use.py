"""A ReAct-style agent loop: think, pick a tool with select, run it in Python, observe.

python examples/react_tool_use.py [--url URL]
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from example_backend import run_example

import radixlm as rl

CAPITALS = {"france": "Paris", "japan": "Tokyo", "italy": "Rome", "peru": "Lima"}
MAX_STEPS = 3

PROMPT = """Answer the question using tools.
Tools: Lookup[country] gives a capital city. Calculate[expression] does arithmetic. Finish[answer] ends.

Question: What is the capital of Italy?
Thought: I should look up Italy.
Action: Lookup[italy]
Observation: Rome
Thought: I know the answer.
Action: Finish[Rome]

"""

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def calculate(expression: str) -> str:
    """Evaluates + - * on integers (a safe stand-in for a calculator tool)."""

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("unsupported expression")

    try:
        return str(value(ast.parse(expression.strip(), mode="eval").body))
    except (SyntaxError, ValueError):
        return "error: cannot calculate that"


def run_tool(tool: str, argument: str) -> str:
    if tool == "Lookup":
        return CAPITALS.get(argument.strip().lower(), "unknown country")
    return calculate(argument)


@rl.function
def react(s, question):
    s += PROMPT + "Question: " + question + "\n"
    for step in range(MAX_STEPS):
        s += "Thought:" + rl.gen(f"thought_{step}", max_tokens=16, stop="\n") + "\n"
        s += "Action: " + rl.select(f"tool_{step}", choices=["Lookup", "Calculate", "Finish"])
        s += "[" + rl.gen(f"argument_{step}", max_tokens=12, stop=["]", "\n"]) + "]\n"
        if s[f"tool_{step}"] == "Finish":
            return s[f"argument_{step}"]
        s += "Observation: " + run_tool(s[f"tool_{step}"], s[f"argument_{step}"]) + "\n"
    return None


def main(backend: Any) -> rl.ProgramState:
    state = react.run("What is the capital of France?", temperature=0, backend=backend)
    print(state.text()[len(PROMPT) :])
    print("answer:", state.ret_value)
    return state


if __name__ == "__main__":
    run_example(main, __doc__)
