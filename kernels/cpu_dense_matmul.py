"""Float32 ``x @ W^T`` on CPU for the linear layers, on weights packed once at load time.

A decode step of 32 rows, or the LM head's 49,152 outputs, is a small-M GEMM: oneDNN's float32
GEMM on its own packed weights reaches 40-55 % of this AVX2 CPU's FMA peak there, MKL's
``F.linear`` 20-45 % (benchmarks/bench_dense_matmul.py). This kernel is the classic register
tile: 4 rows x 24 outputs held in 12 accumulators; per input ``k`` it loads the panel's three
8-wide weight vectors once, broadcasts each row's ``x[k]`` and issues 12 FMAs (all 16 vector
registers in use). With AVX-512 the vectors are 16 wide and a tile 4 rows x 48 outputs. The
weight vectors are pinned to registers (an empty ``asm``): left alone, the compiler folds them
into every FMA as a memory operand, and the extra vector loads halve the speed. 4 x 24 measured
10-20 % faster than 6 x 16 (fewer loads per FMA).

The weight is packed into panels of P = 24 (AVX-512: 48) outputs, ``(panels, K, P)``, so a
tile streams its panel contiguously; the last panel is zero-padded. Torch's intra-op threads
split the panels.
Every output is one row's sum over ``k`` in order, with no blocking of K, so a row gets the
same bits in any batch, tile height or thread count.
Reference: ``torch.nn.functional.linear`` on the unpacked weight.

Layouts: x (rows, K) float32; packed (ceil(N / P), K, P) float32 with P = ``panel_width()``;
out (rows, N) float32.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import PANEL_TILES_SOURCE, VEC_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the dense CPU matmul needs AVX2 and FMA"
#endif
"""
    + VEC_SOURCE
    + PANEL_TILES_SOURCE
    + r"""
// 16-wide vectors where the CPU has AVX-512 (twice the FMA width), else 8-wide (VEC_SOURCE).
// Each output is the same FMA chain over k either way, so both give the same bits.
#if defined(__AVX512F__)
#define PIN_TO_REGISTER(v) asm("" : "+v"(v))
#else
#define PIN_TO_REGISTER(v) asm("" : "+x"(v))
#endif

constexpr int kVectors = 3;  // vectors per panel
constexpr int kPanel = kLanes * kVectors;
constexpr int kMaxRows = 4;  // 12 accumulators + 3 weight vectors + 1 broadcast = 16 registers
constexpr int64_t kRowChunk = 192;  // rows whose activations stay in L2 while panels stream

int64_t panel_width() { return kPanel; }

template <int R>
static inline void tile(const float* __restrict x, int64_t k_total, const float* __restrict panel,
                        float* __restrict out, int64_t n_total, int columns) {
  Vec acc[R][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) acc[r][v] = vzero();
  for (int64_t k = 0; k < k_total; ++k) {
    Vec w[kVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) {
      w[v] = vload(panel + k * kPanel + kLanes * v);
      PIN_TO_REGISTER(w[v]);  // keep it in a register, not as an FMA memory operand
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec a = vbroadcast(x[r * k_total + k]);
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) acc[r][v] = vfma(a, w[v], acc[r][v]);
    }
  }
  if (columns == kPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) vstore(out + r * n_total + kLanes * v, acc[r][v]);
    return;
  }
  float last[R][kPanel];  // the zero-padded last panel
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) vstore(last[r] + kLanes * v, acc[r][v]);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < columns; ++c) out[r * n_total + c] = last[r][c];
}

torch::Tensor dense_matmul(torch::Tensor x, torch::Tensor packed, int64_t n_total) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(),
              "x must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(packed.dtype() == torch::kFloat32 && packed.dim() == 3 && packed.is_contiguous() &&
              packed.size(2) == kPanel, "packed must come from pack_dense_weight");
  const int64_t rows = x.size(0), k_total = x.size(1), panels = packed.size(0);
  TORCH_CHECK(packed.size(1) == k_total, "input width must match the weight's");
  TORCH_CHECK(n_total > (panels - 1) * kPanel && n_total <= panels * kPanel);
  auto out = torch::empty({rows, n_total}, x.options());
  const float* xs = x.data_ptr<float>();
  const float* ws = packed.data_ptr<float>();
  float* os = out.data_ptr<float>();
  for_each_panel_tile<kMaxRows>(
      rows, panels, kPanel, n_total, kRowChunk, [&](auto height, int64_t r, int64_t p, int columns) {
        tile<decltype(height)::value>(xs + r * k_total, k_total, ws + p * k_total * kPanel,
                                      os + r * n_total + p * kPanel, n_total, columns);
      });
  return out;
}
"""
)


def load_cpu_dense_matmul() -> ModuleType | None:
    """The compiled module (``dense_matmul(x, packed, out_features)``, ``panel_width()``), or
    None if this machine cannot build it (no compiler, or no AVX2 / FMA)."""
    return load_cpu_extension("radixlm_cpu_dense_matmul", _SOURCE, ("dense_matmul", "panel_width"))


def pack_dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out_features, in_features) float32 -> (panels, in_features, panel width), zero-padded;
    the width is the built kernel's (24, or 48 with AVX-512)."""
    kernels = load_cpu_dense_matmul()
    assert kernels is not None, "the dense CPU matmul is not built here"
    panel = kernels.panel_width()
    out_features, in_features = weight.shape
    panels = -(-out_features // panel)
    padded = F.pad(weight.detach().float(), (0, 0, 0, panels * panel - out_features))
    return padded.view(panels, panel, in_features).transpose(1, 2).contiguous()
