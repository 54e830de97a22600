"""SGLang's own frontend client (`import sglang as sgl`) drives a radixlm server.

Run with the interpreter of .venv-sglang (sglang 0.5.10.post1 installed --no-deps):

    .venv-sglang/bin/python tests/frontend/sglang_client_programs.py http://127.0.0.1:30000

Prints one JSON object: for each program, the protocol-level facts the test checks (variable
types, choices, regex matches, stream reconstruction, meta_info keys). SGLang's own
`sglang.test.test_programs` are run too where their asserts hold for any model.
"""

from __future__ import annotations

import json
import re
import sys
import types

# sglang.test.test_programs imports sglang.srt.utils.is_hip, which would pull in torch.
_srt_utils = types.ModuleType("sglang.srt.utils")
_srt_utils.is_hip = lambda: False
sys.modules["sglang.srt.utils"] = _srt_utils

import sglang as sgl  # noqa: E402
from sglang.test import test_programs  # noqa: E402

IPV4 = r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)"


@sgl.function
def chat(s, question):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=16))


@sgl.function
def choose(s):
    s += "Q: What is the capital of France?\nA:"
    s += sgl.select("answer", choices=[" Paris", " London", " Rome"])


@sgl.function
def constrained(s):
    s += "Q: What is the IP address of a DNS server?\nA: "
    s += sgl.gen("ip", max_tokens=20, temperature=0, regex=IPV4)
    s += "\nQ: How many days are in a week?\nA: " + sgl.gen("days", dtype=int, max_tokens=4)


@sgl.function
def forked(s):
    s += "Here are three short tips for a good day.\n"
    forks = s.fork(3)
    for i in range(3):
        forks[i] += f"Tip {i + 1}:" + sgl.gen("tip", max_tokens=8, stop="\n")
    forks.join()


@sgl.function
def few_shot(s, question):
    s += "The following are questions with answers.\n\n"
    s += "Q: What is the capital of Germany?\nA: Berlin\n"
    s += "Q: What is the capital of Italy?\nA: Rome\n"
    s += "Q: " + question + "\nA:" + sgl.gen("answer", max_tokens=8, stop="\n", temperature=0)


def run_all(url: str) -> dict:
    backend = sgl.RuntimeEndpoint(url)
    sgl.set_default_backend(backend)
    out: dict = {"model_path": backend.get_model_name()}

    state = chat.run("What is the capital of France?", temperature=0)
    out["gen"] = {
        "answer": state["answer"],
        "num_messages": len(state.messages()),
        "meta_keys": sorted(state.get_meta_info("answer")),
    }

    state = choose.run()
    out["select"] = {
        "answer": state["answer"],
        "num_scores": len(state.get_meta_info("answer")["normalized_prompt_logprobs"]),
    }

    state = constrained.run()
    out["regex"] = {
        "ip": state["ip"],
        "ip_fullmatch": re.fullmatch(IPV4, state["ip"]) is not None,
        "days": state["days"],
    }

    state = forked.run(temperature=0)
    out["fork"] = {"tips": state["tip"]}

    state = chat.run("Say hello.", temperature=0, stream=True)
    deltas = list(state.text_iter("answer"))
    out["stream"] = {"num_deltas": len(deltas), "joined": "".join(deltas), "final": state["answer"]}

    states = few_shot.run_batch(
        [{"question": f"What is the capital of {c}?"} for c in ("France", "Japan", "Spain")]
    )
    out["run_batch"] = {"answers": [s["answer"] for s in states]}

    # SGLang's own test programs whose asserts do not depend on a capable model.
    test_programs.test_mt_bench()
    test_programs.test_select(check_answer=False)
    test_programs.test_regex()
    out["sglang_test_programs"] = ["test_mt_bench", "test_select", "test_regex"]
    return out


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1])))
