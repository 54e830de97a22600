"""Layer pieces against references: rotary frequencies vs transformers, tensor-parallel
shards of the fused linears recombine into the unsharded layer, dummy weights, CPU kernels
built at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.layers.linear import ColumnParallelLinear, RowParallelLinear
from radixlm.runtime.layers.rotary import rope_inv_freq
from radixlm.runtime.model_config import ModelConfig, RopeScaling
from radixlm.runtime.model_loader import resolve_model
from radixlm.runtime.model_runner import ModelRunner


def test_llama3_inv_freq_matches_transformers():
    scaling = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    hf_config = LlamaConfig(
        hidden_size=4096,
        num_attention_heads=32,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    ours = rope_inv_freq(128, 500000.0, scaling)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(ours, rope_inv_freq(128, 500000.0, None))  # scaling did act


def test_fused_column_and_row_shards_recombine():
    torch.manual_seed(0)
    q, kv, hidden = torch.randn(8, 6), torch.randn(4, 6), torch.randn(3, 6)
    shards = [ColumnParallelLinear(6, [8, 4], tp_rank=rank, tp_size=2) for rank in range(2)]
    for shard in shards:
        shard.load_shard(0, q)
        shard.load_shard(1, kv)
    # Each rank holds its half of q then its half of kv.
    torch.testing.assert_close(shards[1].weight, torch.cat([q[4:], kv[2:]]))

    down = torch.randn(5, 12)
    rows = [RowParallelLinear(12, 5, tp_rank=rank, tp_size=2) for rank in range(2)]
    for row in rows:
        row.load_shard(down)
    x = torch.randn(3, 12)
    # The all-reduce of the row shards' partial products is their sum.
    partial = sum(
        torch.nn.functional.linear(x[:, 6 * r : 6 * r + 6], rows[r].weight) for r in range(2)
    )
    torch.testing.assert_close(partial, torch.nn.functional.linear(x, down))
    torch.testing.assert_close(shards[0](hidden), hidden @ torch.cat([q[:4], kv[:2]]).T)


def shrunk_smollm2(folder: Path, num_layers: int):
    """A config-only folder in SmolLM2's real shapes with fewer layers (dummy weights)."""
    smollm2 = resolve_model("smollm2-135m", load_format="dummy")
    config_json = json.loads(Path(smollm2.model_dir, "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config_json, "num_hidden_layers": num_layers})
    )
    resolved = resolve_model(str(folder), load_format="dummy")
    return ModelConfig.from_dir(resolved.model_dir), resolved


def test_dummy_weights_are_seeded_and_give_sane_logits(tmp_path):
    config, resolved = shrunk_smollm2(tmp_path, num_layers=4)

    def prefill_logits(seed: int) -> torch.Tensor:
        runner = ModelRunner(
            config, resolved, max_total_tokens=16, max_running_requests=1, context_len=16, seed=seed
        )
        row = runner.req_to_token_pool.alloc()
        slots = runner.token_allocator.alloc(5)
        runner.req_to_token_pool.write(row, 0, slots)
        batch = build_forward_batch(ForwardMode.EXTEND, [[1, 2, 3, 4, 5]], [0], [row], slots)
        return runner.forward(batch)

    first, again, other = prefill_logits(0), prefill_logits(0), prefill_logits(1)
    assert first.shape == (1, 49152) and first.dtype == torch.float32
    assert torch.isfinite(first).all() and 0 < first.abs().max() < 50
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_cpu_runner_builds_its_layer_kernels_at_start_up(tmp_path, monkeypatch):
    # A first build takes ~30 s: the server's first request must not be the one that waits.
    import radixlm.runtime.model_runner as model_runner

    built: list[bool] = []
    monkeypatch.setattr(model_runner, "load_cpu_layer_ops", lambda: built.append(True))
    config, resolved = shrunk_smollm2(tmp_path, num_layers=1)
    ModelRunner(config, resolved, max_total_tokens=16, max_running_requests=1, context_len=16)
    assert built == [True]
