"""GPU kernel micro-benchmarks: our Triton kernels against FlashInfer and against the plain
torch ops they replace, timed inside CUDA graphs (``triton.testing.do_bench_cudagraph``, the
way a decode step runs them), medians in microseconds.

    python benchmarks/bench_gpu_kernels.py --result-filename kernels.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from radixlm.kernels import pdl
from radixlm.kernels.activation import silu_and_mul
from radixlm.kernels.decode_attention import DecodeWorkspace, decode_attention, decode_num_splits
from radixlm.kernels.extend_attention import extend_attention
from radixlm.kernels.gemv import DEFAULT_CONFIG, GemvConfig, config_for, gemv
from radixlm.kernels.rmsnorm import rmsnorm
from radixlm.kernels.rotary import apply_rotary

DEVICE = "cuda"
DTYPE = torch.bfloat16


def microseconds(fn) -> float:
    fn()  # compile / plan outside the graph
    torch.cuda.synchronize()
    return 1e3 * do_bench_cudagraph(fn, rep=100, return_mode="median")


def paged_setup(batch: int, seq_len: int, num_heads: int, num_kv_heads: int, head_dim: int):
    num_slots = batch * seq_len + 1
    k_buffer = torch.randn(num_slots, num_kv_heads, head_dim, device=DEVICE, dtype=DTYPE)
    v_buffer = torch.randn_like(k_buffer)
    # Scattered slots, like a pool after some churn.
    slots = torch.randperm(num_slots - 1, device=DEVICE) + 1
    req_to_token = slots.view(batch, seq_len)
    rows = torch.arange(batch, device=DEVICE)
    seq_lens = torch.full((batch,), seq_len, device=DEVICE)
    return k_buffer, v_buffer, req_to_token, rows, seq_lens


def bench_decode(batch: int, seq_len: int, heads: tuple[int, int, int]) -> dict:
    num_heads, num_kv_heads, head_dim = heads
    k_buffer, v_buffer, req_to_token, rows, seq_lens = paged_setup(batch, seq_len, *heads)
    q = torch.randn(batch, num_heads, head_dim, device=DEVICE, dtype=DTYPE)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    workspace = DecodeWorkspace(num_heads, num_kv_heads, head_dim, num_sms, DEVICE)
    out = torch.empty_like(q)
    scale = head_dim**-0.5
    kv_bytes = 2 * batch * seq_len * num_kv_heads * head_dim * k_buffer.element_size()
    row = {
        "kernel": "decode_attention",
        "batch": batch,
        "seq_len": seq_len,
        "heads": heads,
        "kv_bytes": kv_bytes,
        "num_splits": decode_num_splits(batch, num_kv_heads, num_sms),
    }
    # The split count the runtime picks, and its neighbours.
    for splits in {
        max(1, row["num_splits"] // 2),
        row["num_splits"],
        min(32, 2 * row["num_splits"]),
    }:
        if splits > 1 and batch * num_heads * splits > workspace.max_rows:
            continue  # a split count the runtime never picks at this batch size
        row[f"triton_us_splits{splits}"] = microseconds(
            lambda splits=splits: decode_attention(
                q, k_buffer, v_buffer, req_to_token, rows, seq_lens, scale, splits, workspace, out
            )
        )
    row["triton_us"] = row[f"triton_us_splits{row['num_splits']}"]
    try:
        import flashinfer
    except ImportError:
        return row
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        torch.empty(256 << 20, dtype=torch.uint8, device=DEVICE),
        "NHD",
        use_tensor_cores=num_heads // num_kv_heads >= 4,
        backend="fa2",
    )
    indptr = torch.arange(batch + 1, dtype=torch.int32) * seq_len
    wrapper.plan(
        indptr,
        req_to_token.reshape(-1).to(torch.int32),
        torch.ones(batch, dtype=torch.int32),
        num_heads,
        num_kv_heads,
        head_dim,
        1,
        q_data_type=DTYPE,
        kv_data_type=DTYPE,
    )
    paged = (k_buffer.unsqueeze(1), v_buffer.unsqueeze(1))
    row["flashinfer_us"] = microseconds(lambda: wrapper.run(q, paged, out=out))
    return row


def bench_extend(seq_len: int, heads: tuple[int, int, int]) -> dict:
    num_heads, num_kv_heads, head_dim = heads
    k_buffer, v_buffer, req_to_token, rows, seq_lens = paged_setup(1, seq_len, *heads)
    q = torch.randn(seq_len, num_heads, head_dim, device=DEVICE, dtype=DTYPE)
    starts = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    scale = head_dim**-0.5
    flops = 2 * 2 * num_heads * head_dim * seq_len * seq_len / 2  # causal: half the matrix
    row = {
        "kernel": "extend_attention",
        "seq_len": seq_len,
        "heads": heads,
        "tflop": flops / 1e12,
        "triton_us": microseconds(
            lambda: extend_attention(
                q,
                k_buffer,
                v_buffer,
                req_to_token,
                rows,
                seq_lens,
                seq_lens,
                starts,
                seq_len,
                scale,
            )
        ),
    }
    try:
        import flashinfer
    except ImportError:
        return row
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(
        torch.empty(256 << 20, dtype=torch.uint8, device=DEVICE), "NHD", backend="fa2"
    )
    indptr = torch.tensor([0, seq_len], dtype=torch.int32)
    wrapper.plan(
        indptr,
        indptr,
        req_to_token.reshape(-1).to(torch.int32),
        torch.ones(1, dtype=torch.int32),
        num_heads,
        num_kv_heads,
        head_dim,
        1,
        causal=True,
        q_data_type=DTYPE,
        kv_data_type=DTYPE,
    )
    paged = (k_buffer.unsqueeze(1), v_buffer.unsqueeze(1))
    row["flashinfer_us"] = microseconds(lambda: wrapper.run(q, paged))
    return row


def bench_fused(num_tokens: int, hidden: int, intermediate: int, heads: int, head_dim: int):
    """Each fused kernel against the torch ops the layer would run without it."""
    x = torch.randn(num_tokens, hidden, device=DEVICE, dtype=DTYPE)
    residual = torch.randn_like(x)
    weight = torch.randn(hidden, device=DEVICE, dtype=DTYPE)
    gate_up = torch.randn(num_tokens, 2 * intermediate, device=DEVICE, dtype=DTYPE)
    qk = torch.randn(num_tokens, heads, head_dim, device=DEVICE, dtype=DTYPE)
    cos = torch.randn(num_tokens, 1, head_dim, device=DEVICE, dtype=DTYPE)
    sin = torch.randn_like(cos)
    half = head_dim // 2

    def torch_add_rmsnorm():
        summed = residual.add_(x)
        return F.rms_norm(summed, (hidden,), weight, 1e-5)

    def torch_silu_and_mul():
        return F.silu(gate_up[:, :intermediate]).mul_(gate_up[:, intermediate:])

    def torch_rotary():
        swapped = torch.cat((qk[..., half:], qk[..., :half]), dim=-1)
        return torch.addcmul(qk * cos, swapped, sin)

    common = {"num_tokens": num_tokens}
    return [
        {
            "kernel": "add_rmsnorm",
            **common,
            "hidden": hidden,
            "triton_us": microseconds(lambda: rmsnorm(x, weight, 1e-5, residual)),
            "torch_us": microseconds(torch_add_rmsnorm),
        },
        {
            "kernel": "silu_and_mul",
            **common,
            "intermediate": intermediate,
            "triton_us": microseconds(lambda: silu_and_mul(gate_up)),
            "torch_us": microseconds(torch_silu_and_mul),
        },
        {
            "kernel": "rotary",
            **common,
            "heads": heads,
            "triton_us": microseconds(lambda: apply_rotary(qk, cos, sin)),
            "torch_us": microseconds(torch_rotary),
        },
    ]


# Tiles (block_n, block_k, num_warps, num_stages) swept per shape, then the best one's weight
# loads marked evict-first.
GEMV_TILES = [
    GemvConfig(16, 512, 8, 3),
    GemvConfig(4, 1024, 4, 3),
    GemvConfig(8, 1024, 8, 2),
    GemvConfig(8, 1024, 8, 3),
    GemvConfig(8, 1024, 8, 4),
    GemvConfig(16, 1024, 8, 2),
    GemvConfig(16, 1024, 8, 3),
    GemvConfig(16, 1024, 8, 4),
    GemvConfig(16, 1024, 16, 3),
    GemvConfig(32, 1024, 16, 3),
    GemvConfig(4, 2048, 8, 3),
    GemvConfig(8, 2048, 8, 3),
    GemvConfig(8, 2048, 16, 3),
    GemvConfig(16, 2048, 16, 3),
]


def bench_gemv(n: int, k: int) -> dict:
    """One-row linear after an RMSNorm of its input, as in a decode step (a short kernel before
    each GEMV, which PDL lets the GEMV overlap), over enough weight copies that nothing stays
    in L2: F.linear (cuBLAS) vs our Triton GEMV under each config, with and without PDL. A
    linear's time is the pair's minus the norm's alone."""
    weight_bytes = n * k * 2
    copies = max(2, -(-(256 << 20) // weight_bytes))
    weights = [torch.randn(n, k, device=DEVICE, dtype=DTYPE) for _ in range(copies)]
    x = torch.randn(1, k, device=DEVICE, dtype=DTYPE)
    norm_weight = torch.randn(k, device=DEVICE, dtype=DTYPE)

    def per_call(linear=None) -> float:
        def chain():
            for w in weights:
                normed = rmsnorm(x, norm_weight, 1e-5)
                if linear is not None:
                    linear(normed, w)

        return microseconds(chain) / copies

    norm_us: dict[bool, float] = {}  # the norm alone, with and without PDL

    def linear_us(linear) -> float:
        if pdl.ENABLED not in norm_us:
            norm_us[pdl.ENABLED] = per_call()
        return per_call(linear) - norm_us[pdl.ENABLED]

    def triton_us(config: GemvConfig) -> float:
        return linear_us(lambda normed, w: gemv(normed, w, config=config))

    row = {"kernel": "gemv", "n": n, "k": k, "torch_us": linear_us(F.linear)}
    timings = {cfg: triton_us(cfg) for cfg in GEMV_TILES}
    tile = min(timings, key=timings.get)
    timings[tile._replace(evict_first=True)] = triton_us(tile._replace(evict_first=True))
    table = config_for(n, k)  # what the runtime uses now
    timings.setdefault(table, triton_us(table))
    best = min(timings, key=timings.get)
    pdl.ENABLED = False
    row["torch_us_no_pdl"] = linear_us(F.linear)
    row["triton_us_no_pdl"] = triton_us(best)
    row["default_us_no_pdl"] = triton_us(DEFAULT_CONFIG)  # the previous kernel and config
    pdl.ENABLED = True
    row.update(
        table_config=list(table),
        table_us=timings[table],
        triton_us=timings[best],
        triton_config=list(best),
        torch_tb_s=weight_bytes / row["torch_us"] / 1e6,
        triton_tb_s=weight_bytes / timings[best] / 1e6,
        sweep=[
            [list(cfg), round(us, 2)] for cfg, us in sorted(timings.items(), key=lambda t: t[1])
        ],
    )
    expected = x.float() @ weights[0].float().t()
    err = (gemv(x, weights[0], config=best).float() - expected).norm() / expected.norm()
    row["triton_rel_err"] = err.item()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result-filename", default=None)
    parser.add_argument("--only", choices=("gemv", "other"), default=None)
    args = parser.parse_args()
    rows = []
    # Llama-3.1-8B's one-token linears: qkv, o, gate_up, down, lm_head.
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)):
        if args.only != "other":
            rows.append(bench_gemv(n, k))
            summary = {key: value for key, value in rows[-1].items() if key != "sweep"}
            print(json.dumps(summary), "top:", rows[-1]["sweep"][:4], flush=True)
    if args.only != "gemv":
        llama = (32, 8, 128)
        for batch, seq_len in ((1, 1280), (64, 1024), (256, 136)):
            rows.append(bench_decode(batch, seq_len, llama))
        rows.append(bench_decode(1, 1280, (9, 3, 64)))  # SmolLM2-135M
        rows.append(bench_extend(1024, llama))
        rows.append(bench_extend(4096, llama))
        for num_tokens in (1, 64, 4096):
            rows += bench_fused(num_tokens, 4096, 14336, 40, 128)  # Llama-3.1-8B: q + k heads
    device = torch.cuda.get_device_name()
    for row in rows:
        row["device"] = device
        if row["kernel"] != "gemv":
            print(json.dumps(row), flush=True)
    if args.result_filename:
        with open(args.result_filename, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
