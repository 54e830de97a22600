"""``x @ W^T`` with bfloat16 weights on AVX512-BF16 dot products (AMD Zen 4, Intel Cooper Lake),
for CPUs without AMX tiles.

``VDPBF16PS`` multiplies two bfloat16 pairs per float32 lane and adds both products to the lane:
32 multiply-adds an instruction where a float32 FMA does 16, from weights half as large. The
kernel is cpu_dense_matmul.py's register tile on pairs of ``k``: per pair it loads the panel's
three weight vectors (16 outputs x 2 ``k`` each), broadcasts each row's two inputs as one
32-bit lane and issues one dot product per accumulator. With 32 vector registers a tile is 8
rows x 48 outputs (24 accumulators). The inputs are rounded to bfloat16 once per pass (as
``Tensor.to(torch.bfloat16)`` rounds them); every output is one row's chain over the pairs
in order, so a row gets the same bits in any batch, tile height or thread count. The instruction
treats denormal operands as zero (products below ~1e-38 are lost).
Reference: ``F.linear`` of the bfloat16-rounded input and weight in float32.

Layouts: x (rows, K) float32, K even; packed (ceil(N / 48), K / 2, 48, 2) bfloat16, the last
panel zero-padded (``pack_bf16_dot_weight``); out (rows, N) float32.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import BF16_SOURCE, PANEL_TILES_SOURCE

PANEL = 48  # outputs per panel: three 16-lane vectors

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#if !defined(__AVX512BF16__)
#error "the bfloat16 dot-product matmul needs AVX512-BF16"
#endif
"""
    + BF16_SOURCE
    + PANEL_TILES_SOURCE
    + r"""
#define PIN_TO_REGISTER(v) asm("" : "+v"(v))

constexpr int kVectors = 3;
constexpr int kPanel = 16 * kVectors;
constexpr int kMaxRows = 8;  // 24 accumulators + 3 weight vectors + 1 broadcast of 32 registers
constexpr int64_t kRowChunk = 192;  // rows whose inputs stay in L2 while panels stream

template <int R>
static inline void tile(const uint32_t* __restrict x_pairs, int64_t pairs,
                        const __m512i* __restrict panel, float* __restrict out, int64_t n_total,
                        int columns) {
  __m512 acc[R][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i w[kVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) {
      w[v] = _mm512_loadu_si512(panel + p * kVectors + v);
      PIN_TO_REGISTER(w[v]);  // a register, not a memory operand of every dot product
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)x_pairs[r * pairs + p]);
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, (__m512bh)w[v]);
    }
  }
  if (columns == kPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + r * n_total + 16 * v, acc[r][v]);
    return;
  }
  const __mmask16 none = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) {  // the zero-padded last panel: its real columns only
      const int left = columns - 16 * v;
      const __mmask16 mask = left >= 16 ? (__mmask16)0xffff
                             : left > 0 ? (__mmask16)((1u << left) - 1) : none;
      _mm512_mask_storeu_ps(out + r * n_total + 16 * v, mask, acc[r][v]);
    }
}

// x rounded to bfloat16 as torch rounds it, two inputs per 32-bit lane.
static torch::Tensor to_bf16_pairs(const torch::Tensor& x) {
  const int64_t rows = x.size(0), k_total = x.size(1);
  auto pairs = torch::empty({rows, k_total / 2}, x.options().dtype(torch::kInt32));
  const float* xs = x.data_ptr<float>();
  at::BFloat16* out = reinterpret_cast<at::BFloat16*>(pairs.data_ptr<int32_t>());
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) to_bf16_values(xs + r * k_total, out + r * k_total, k_total);
  });
  return pairs;
}

torch::Tensor bf16_dot_matmul(torch::Tensor x, torch::Tensor packed, int64_t n_total) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(),
              "x must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(packed.dtype() == torch::kBFloat16 && packed.dim() == 4 && packed.is_contiguous() &&
              packed.size(2) == kPanel && packed.size(3) == 2,
              "packed must come from pack_bf16_dot_weight");
  const int64_t rows = x.size(0), pairs = packed.size(1), panels = packed.size(0);
  TORCH_CHECK(x.size(1) == 2 * pairs, "input width must match the weight's");
  TORCH_CHECK(n_total > (panels - 1) * kPanel && n_total <= panels * kPanel);
  auto out = torch::empty({rows, n_total}, x.options());
  const torch::Tensor x_pairs = to_bf16_pairs(x);
  const uint32_t* xs = reinterpret_cast<const uint32_t*>(x_pairs.data_ptr<int32_t>());
  const __m512i* ws = reinterpret_cast<const __m512i*>(packed.data_ptr());
  float* os = out.data_ptr<float>();
  for_each_panel_tile<kMaxRows>(
      rows, panels, kPanel, n_total, kRowChunk, [&](auto height, int64_t r, int64_t p, int columns) {
        tile<decltype(height)::value>(xs + r * pairs, pairs, ws + p * pairs * kVectors,
                                      os + r * n_total + p * kPanel, n_total, columns);
      });
  return out;
}
"""
)


def load_cpu_bf16_matmul() -> ModuleType | None:
    """The compiled module (``bf16_dot_matmul(x, packed, out_features)``), or None where this
    machine cannot build it (no compiler, or no AVX512-BF16)."""
    return load_cpu_extension(
        "radixlm_cpu_bf16_matmul", _SOURCE, ("bf16_dot_matmul",), cpu_flags=("avx512_bf16",)
    )


def pack_bf16_dot_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out_features, in_features) float -> the kernel's (panels, in_features / 2, 48, 2)
    bfloat16 layout (rounded to nearest even), the last panel zero-padded."""
    out_features, in_features = weight.shape
    assert in_features % 2 == 0, "the kernel takes inputs in pairs"
    panels = -(-out_features // PANEL)
    padded = F.pad(weight.detach().to(torch.bfloat16), (0, 0, 0, panels * PANEL - out_features))
    return padded.view(panels, PANEL, in_features // 2, 2).transpose(1, 2).contiguous()
