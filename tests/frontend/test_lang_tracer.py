"""Tracing: graphs of whole programs, the shared prefix, and what a trace cannot follow."""

from __future__ import annotations

import pytest

import radixlm as rl
from radixlm.chat_templates import get_chat_template
from radixlm.ir import Argument, ConstantText, Fork, Gen, GetForkItem, Join, Select
from radixlm.tracer import StopTracing, extract_prefix_by_tracing


@rl.function
def expert(s, question):
    s += rl.system("You are an expert.")
    s += rl.user("Which expert answers: " + question)
    s += rl.assistant(rl.gen("expert", max_tokens=8))
    forks = s.fork(2)
    forks += lambda i: f"Aspect {i}: " + rl.gen("aspect", max_tokens=8)
    forks.join()
    s += rl.select("verdict", choices=["good", "bad"])


def test_trace_records_the_graph_without_a_backend():
    traced = expert.trace()
    kinds = [type(n).__name__ for n in traced.nodes]
    assert kinds.count("Gen") == 1 and kinds.count("Select") == 1
    assert isinstance(traced.nodes[-1], Select)
    assert any(isinstance(n, Fork) and n.size == 2 for n in traced.nodes)
    join = next(n for n in traced.nodes if isinstance(n, Join))
    # Each branch ends in its own gen, which follows its GetForkItem.
    assert all(isinstance(b, Gen) for b in join.branches)
    assert all(isinstance(b.prev_node.prev_node, GetForkItem) for b in join.branches)
    # Gathered branch variables are lists of variable references.
    assert [v.name for v in traced.variables["aspect"]] == ["aspect", "aspect"]
    graph = traced.print_graph()
    assert "Argument('question')" in graph
    assert "Fork(" in graph and "GetForkItem(" in graph and "Join([" in graph
    # Lines are numbered nodes, dependencies first.
    first_ids = [int(line.split(" = ")[0][1:]) for line in graph.splitlines()]
    assert first_ids.index(traced.last_node.node_id) == len(first_ids) - 1


def test_trace_with_given_arguments_and_template():
    traced = expert.trace(question="What is 2+2?")
    text = "".join(n.value for n in traced.nodes if isinstance(n, ConstantText))
    assert "SYSTEM:You are an expert.\nUSER:Which expert answers: What is 2+2?\n" in text


def test_trace_uses_the_backends_chat_template(fake, endpoint):
    traced = expert.trace(backend=endpoint)
    assert traced.nodes[0].value == "<|im_start|>system\n"


def test_prefix_stops_at_the_first_argument_or_gen():
    template = get_chat_template("chatml")
    prefix = extract_prefix_by_tracing(expert.func, expert.arg_names, {}, template)
    assert prefix == (
        "<|im_start|>system\nYou are an expert.<|im_end|>\n<|im_start|>user\nWhich expert answers: "
    )


@pytest.mark.parametrize(
    "use",
    [
        lambda s, q: s.__iadd__(f"Q: {q}"),
        lambda s, q: s.__iadd__("Q: " + str(q)),
        lambda s, q: s.__iadd__(q.lower()),
        lambda s, q: s.__iadd__("yes" if q else "no"),
        lambda s, q: s.__iadd__("Q: " + q[0]),
    ],
)
def test_arguments_used_as_values_end_a_prefix_trace(use):
    def program(s, q):
        s += "A constant start. "
        use(s, q)
        s += "unreachable"

    template = get_chat_template("default")
    assert extract_prefix_by_tracing(program, ["q"], {}, template) == "A constant start. "


def test_full_trace_explains_an_argument_used_as_a_value():
    @rl.function
    def formats(s, q):
        s += f"Q: {q}"

    with pytest.raises(StopTracing, match="argument 'q' is used as a Python value"):
        formats.trace()
    assert formats.trace(q="given").nodes[0].value == "Q: given"


def test_reading_a_gen_result_in_a_trace_gives_a_variable_node():
    @rl.function
    def reuse(s):
        s += rl.gen("a", max_tokens=2)
        s += "again: " + s["a"]

    traced = reuse.trace()
    assert [type(n).__name__ for n in traced.nodes] == ["Gen", "ConstantText", "Variable"]
    assert traced.nodes[-1].source is traced.nodes[0]


def test_argument_nodes_concatenate_like_text():
    combined = "Q: " + Argument("q") + "\n"
    assert [type(e).__name__ for e in combined.exprs] == [
        "ConstantText",
        "Argument",
        "ConstantText",
    ]
    with pytest.raises(TypeError, match="str or radixlm expressions"):
        ConstantText("x") + 3
