"""The overlapped decode on CUDA (pinned copies, events, placeholders resolved on the device)
against the serial scheduler: the real model runner with CUDA graphs, same greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from radixlm.radix_cache import RadixCache  # noqa: E402
from radixlm.runtime.batch_runner import BatchRunner  # noqa: E402
from radixlm.runtime.grammar_manager import GrammarManager  # noqa: E402
from radixlm.runtime.io_struct import GenerateRequest  # noqa: E402
from radixlm.runtime.kv_manager import KVManager  # noqa: E402
from radixlm.runtime.model_config import ModelConfig  # noqa: E402
from radixlm.runtime.model_loader import ResolvedModel  # noqa: E402
from radixlm.runtime.model_runner import ModelRunner  # noqa: E402
from radixlm.runtime.output_builder import OutputBuilder  # noqa: E402
from radixlm.runtime.sampling_params import SamplingParams  # noqa: E402
from radixlm.runtime.scheduler import Scheduler  # noqa: E402
from radixlm.runtime.scheduler_config import SchedulerConfig  # noqa: E402

pytestmark = pytest.mark.gpu

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "eos_token_id": 2,
}


def scheduler(tmp_path: Path, overlap: bool) -> Scheduler:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    model_config = ModelConfig.from_dir(str(tmp_path))
    runner = ModelRunner(
        model_config,
        ResolvedModel(str(tmp_path), str(tmp_path), "dummy", "tiny"),
        device="cuda",
        dtype=torch.float32,
        attention_backend="triton",
        max_total_tokens=8192,
        max_running_requests=32,
        context_len=512,
        cuda_graph_max_bs=32,
    )
    kv = KVManager(runner.token_allocator, runner.req_to_token_pool, RadixCache())
    config = SchedulerConfig(
        context_len=512,
        vocab_size=1024,
        max_running_requests=32,
        chunk_size=4096,
        enable_overlap=overlap,
    )
    batch_runner = BatchRunner(runner, None, [2], 512, 1024)
    return Scheduler(config, kv, batch_runner, GrammarManager(None, None), OutputBuilder())


def generate(s: Scheduler, prompts: list[list[int]]) -> tuple[dict[str, list[int]], int]:
    for i, ids in enumerate(prompts):
        sampling = SamplingParams(max_new_tokens=40, temperature=0.0, ignore_eos=True)
        s.handle(GenerateRequest(rid=f"r{i}", input_ids=ids, sampling=sampling))
    out: dict[str, list[int]] = {}
    in_flight_steps = 0
    while s.busy:
        s.step()
        in_flight_steps += s._in_flight is not None
        for update in s.outputs.drain():
            out.setdefault(update.rid, []).extend(update.new_output_ids)
    return out, in_flight_steps


def test_overlapped_decode_gives_the_serial_tokens_on_cuda(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(3, 1024, (20 + 7 * i,), generator=generator).tolist() for i in range(24)
    ]
    serial, _ = generate(scheduler(tmp_path, overlap=False), prompts)
    overlapped, in_flight_steps = generate(scheduler(tmp_path, overlap=True), prompts)
    assert all(len(ids) == 40 for ids in serial.values())
    assert overlapped == serial
    assert in_flight_steps >= 30  # the decode steps really left a pass in flight
