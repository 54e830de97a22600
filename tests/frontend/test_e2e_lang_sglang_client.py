"""SGLang's frontend client, from a separate venv, drives our server over the native API.

The venv is prepared outside the test run (nothing is installed here):

    python3 -m venv .venv-sglang
    .venv-sglang/bin/pip install --no-deps sglang==0.5.10.post1
    .venv-sglang/bin/pip install numpy pybase64 requests IPython pydantic tqdm aiohttp
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import radixlm as rl

# A hung server must fail the test, not stall the suite.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SGLANG_PYTHON = ROOT / ".venv-sglang" / "bin" / "python"
SCRIPT = Path(__file__).with_name("sglang_client_programs.py")
IPV4 = r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)"


@pytest.mark.timeout(660)
@pytest.mark.skipif(
    not SGLANG_PYTHON.exists(), reason=".venv-sglang is absent (see this file's docstring)"
)
def test_sglang_client_programs(lang_server: rl.Runtime):
    done = subprocess.run(
        [str(SGLANG_PYTHON), str(SCRIPT), lang_server.url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["model_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert out["gen"]["answer"].strip()
    assert out["gen"]["num_messages"] == 3
    assert {"id", "prompt_tokens", "completion_tokens", "cached_tokens", "finish_reason"} <= set(
        out["gen"]["meta_keys"]
    )
    assert out["select"]["answer"] in (" Paris", " London", " Rome")
    assert out["select"]["num_scores"] == 3
    assert out["regex"]["ip_fullmatch"] and re.fullmatch(IPV4, out["regex"]["ip"])
    int(out["regex"]["days"])
    assert isinstance(out["fork"]["tips"], list) and len(out["fork"]["tips"]) == 3
    assert out["stream"]["num_deltas"] > 1
    assert out["stream"]["joined"] == out["stream"]["final"]
    assert len(out["run_batch"]["answers"]) == 3
    assert out["sglang_test_programs"] == ["test_mt_bench", "test_select", "test_regex"]
