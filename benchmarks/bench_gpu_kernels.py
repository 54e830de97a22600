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

from radixlm.kernels.activation import silu_and_mul
from radixlm.kernels.decode_attention import DecodeWorkspace, decode_attention, decode_num_splits
from radixlm.kernels.extend_attention import extend_attention
from radixlm.kernels.gemv import gemv
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


GEMV_CONFIGS = [
    (4, 1024, 4, 4),
    (8, 512, 4, 4),
    (16, 256, 4, 4),
    (16, 512, 4, 4),
    (16, 512, 8, 3),
    (32, 256, 8, 4),
]


def bench_gemv(n: int, k: int) -> dict:
    """One-row linear over enough weight copies that nothing stays in L2 (as in a decode
    step, where each layer's weights are read once): F.linear (cuBLAS) vs our Triton GEMV."""
    weight_bytes = n * k * 2
    copies = max(2, -(-(256 << 20) // weight_bytes))
    weights = [torch.randn(n, k, device=DEVICE, dtype=DTYPE) for _ in range(copies)]
    x = torch.randn(1, k, device=DEVICE, dtype=DTYPE)

    def per_call(fn) -> float:
        return microseconds(lambda: [fn(w) for w in weights]) / copies

    row = {"kernel": "gemv", "n": n, "k": k, "torch_us": per_call(lambda w: F.linear(x, w))}
    timings = {cfg: per_call(lambda w, cfg=cfg: gemv(x, w, config=cfg)) for cfg in GEMV_CONFIGS}
    best = min(timings, key=timings.get)
    row.update(
        triton_us=timings[best],
        triton_config=best,
        torch_tb_s=weight_bytes / row["torch_us"] / 1e6,
        triton_tb_s=weight_bytes / timings[best] / 1e6,
    )
    err = (gemv(x, weights[0], config=best).float() - x.float() @ weights[0].float().t()).norm()
    row["triton_rel_err"] = (err / (x.float() @ weights[0].float().t()).norm()).item()
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
            print(json.dumps(rows[-1]), flush=True)
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
        print(json.dumps(row), flush=True)
    if args.result_filename:
        with open(args.result_filename, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
