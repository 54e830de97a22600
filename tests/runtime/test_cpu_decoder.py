"""The compiled CPU decoder loop (kernels/cpu_decoder.py) against the model's Python layers: the
same logits and the same K/V, bit for bit, for prompt chunks, decode rows and mixes of both,
on each matmul route (block kernel for few rows, dense copy for many), and with prompt tokens on
the AMX prompt kernel where it applies (bfloat16 K/V under int4)."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_amx_attention import load_cpu_amx_attention
from radixlm.kernels.cpu_decoder import load_cpu_decoder
from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.model_runner import ModelRunner

from .test_model_layers import shrunk_smollm2

needs_compiler = pytest.mark.skipif(load_cpu_decoder() is None, reason="no C++ compiler")


def _runner(tmp_path, quantization: str) -> ModelRunner:
    config, resolved = shrunk_smollm2(tmp_path, num_layers=3)
    return ModelRunner(
        config,
        resolved,
        max_total_tokens=1024,
        max_running_requests=8,
        context_len=512,
        quantization=quantization,
    )


# Each sequence's prompt length: sequence 2's second chunk is 25 prompt tokens then 5
# generated ones (a retracted request recomputing both).
PROMPT_LENS = {0: 40, 1: 70, 2: 45}


class _Pools:
    """Rows and slots handed out in order, as the scheduler would."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.slots: dict[int, list[int]] = {}

    def batch(self, mode: ForwardMode, items: list[tuple[int, int]], seed: int):
        """A pass of ``items`` (sequence, new tokens); a sequence seen first gets a row."""
        pool = self.runner.req_to_token_pool
        generator = torch.Generator().manual_seed(seed)
        ids, prefix_lens, rows, out_cache_loc = [], [], [], []
        for seq, num_new in items:
            if seq not in self.slots:
                self.slots[seq] = []
                assert pool.alloc() == seq
            new = self.runner.token_allocator.alloc(num_new)
            pool.write(seq, len(self.slots[seq]), new)
            prefix_lens.append(len(self.slots[seq]))
            self.slots[seq] += new
            rows.append(seq)
            out_cache_loc += new
            ids.append(torch.randint(0, 1000, (num_new,), generator=generator).tolist())
        logits_indices = list(range(len(out_cache_loc)))  # every token's logits
        prompt_lens = [PROMPT_LENS[seq] for seq, _ in items]
        return build_forward_batch(
            mode, ids, prefix_lens, rows, out_cache_loc, logits_indices, "cpu", prompt_lens
        )


class _Counted:
    """The decoder, counting the passes it runs."""

    def __init__(self, decoder) -> None:
        self.decoder, self.passes = decoder, 0

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.decoder.forward(*args)


def _kv(runner: ModelRunner) -> list[torch.Tensor]:
    cache = runner.kv_cache
    return [b.clone() for b in (*cache.k_buffer, *cache.v_buffer)]


@needs_compiler
@pytest.mark.parametrize("quantization", ["none", "int4"])
def test_compiled_layers_give_the_python_layers_bits(tmp_path, quantization):
    runner = _runner(tmp_path, quantization)
    model = runner.model.model
    decoder = model.cpu_decoder
    assert decoder is not None
    decoder = _Counted(decoder)
    pools = _Pools(runner)
    passes = [
        (ForwardMode.EXTEND, [(0, 40), (1, 70)]),  # prompt chunks: the dense route
        (ForwardMode.DECODE, [(0, 1), (1, 1)]),  # few rows: the block kernel under int4
        (ForwardMode.EXTEND, [(2, 20), (0, 1), (1, 1)]),  # a chunk beside decode rows
        (ForwardMode.EXTEND, [(2, 30), (0, 1), (1, 1)]),  # the same past 32 rows
        (ForwardMode.DECODE, [(2, 1), (0, 1), (1, 1)]),
    ]
    for seed, (mode, items) in enumerate(passes):
        batch = pools.batch(mode, items, seed)
        model.cpu_decoder = None
        python = runner.forward(batch).clone()
        python_kv = _kv(runner)
        model.cpu_decoder = decoder
        compiled = runner.forward(batch)  # rewrites the same slots
        assert torch.equal(compiled, python), (mode, items)
        assert all(torch.equal(a, b) for a, b in zip(_kv(runner), python_kv, strict=True))
    assert decoder.passes == len(passes)
    assert torch.isfinite(compiled).all()
    on_tiles = runner.attn_backend._prompt_kernel is not None
    assert on_tiles == (quantization == "int4" and load_cpu_amx_attention() is not None)


@needs_compiler
def test_layers_the_loop_cannot_run_keep_the_python_path(tmp_path):
    runner = _runner(tmp_path, "none")
    assert runner.model.model.cpu_decoder is not None
    from radixlm.runtime.models.cpu_decoder import build_cpu_decoder

    layer = runner.model.model.layers[1]
    layer.mlp.down_proj.cpu_weight = None  # e.g. a weight on oneDNN
    assert build_cpu_decoder(runner.model.model, runner.kv_cache) is None
