"""The small ops of a decoder layer as single CPU calls, for float32 activations: RMSNorm (with
its residual add), rotary embedding, SwiGLU's ``silu(gate) * up``, and the K/V store.

In a decode step of a small model each of these is a handful of torch ops on a few hundred
values: the op dispatch, not the arithmetic, is what costs (~20-40 us each as torch ops, 60-120
of them a step). One compiled call each does the same arithmetic in float32, row by row, so a
row's result does not depend on its batch. Built with the shared loader
(kernels/cpu_extension.py); None without a compiler, and callers keep their torch path.
References: ``rmsnorm_reference``, ``rotary_reference``, ``silu_and_mul_reference`` and
``store_kv_reference`` in ``kernels.reference``.
"""

from __future__ import annotations

from types import ModuleType

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import EXP8_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#if defined(__AVX2__) && defined(__FMA__)
#define VECTOR_EXP 1
"""
    + EXP8_SOURCE
    + r"""
#endif

constexpr int64_t kRowsPerTask = 16;  // small batches stay on one thread

static void check_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous());
  TORCH_CHECK(weight.dtype() == torch::kFloat32 && weight.is_contiguous() &&
              weight.numel() == x.size(1));
}

static inline void normalize_row(const float* x, const float* weight, float* out, int64_t n,
                                 float eps) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += x[i] * x[i];
  const float scale = 1.f / std::sqrt(squares / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  check_rows(x, weight);
  auto out = torch::empty_like(x);
  const int64_t n = x.size(1);
  const float *src = x.data_ptr<float>(), *w = weight.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      normalize_row(src + r * n, w, dst + r * n, n, static_cast<float>(eps));
  });
  return out;
}

// residual += x (in place); returns norm(residual).
torch::Tensor add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight,
                           double eps) {
  check_rows(x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.dtype() == torch::kFloat32 &&
              residual.is_contiguous());
  auto out = torch::empty_like(x);
  const int64_t n = x.size(1);
  const float *src = x.data_ptr<float>(), *w = weight.data_ptr<float>();
  float *sum = residual.data_ptr<float>(), *dst = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = sum + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) row[i] += src[r * n + i];
      normalize_row(row, w, dst + r * n, n, static_cast<float>(eps));
    }
  });
  return out;
}

// x (tokens, heads, dim) with unit stride along dim; cos, sin_signed (tokens, dim). Returns a
// contiguous rotated copy: x * cos + [x2, x1] * sin_signed.
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor sin_signed) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 3 && x.stride(2) == 1);
  TORCH_CHECK(cos.dtype() == torch::kFloat32 && sin_signed.dtype() == torch::kFloat32);
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2), half = dim / 2;
  TORCH_CHECK(cos.is_contiguous() && sin_signed.is_contiguous() &&
              cos.numel() == tokens * dim && sin_signed.numel() == tokens * dim);
  auto out = torch::empty({tokens, heads, dim}, x.options());
  const float *src = x.data_ptr<float>(), *c = cos.data_ptr<float>(),
              *s = sin_signed.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t token_stride = x.stride(0), head_stride = x.stride(1);
  at::parallel_for(0, tokens, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float *ct = c + t * dim, *st = s + t * dim;
      for (int64_t h = 0; h < heads; ++h) {
        const float* in = src + t * token_stride + h * head_stride;
        float* o = dst + (t * heads + h) * dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          o[i] = in[i] * ct[i] + in[i + half] * st[i];
          o[i + half] = in[i + half] * ct[i + half] + in[i] * st[i + half];
        }
      }
    }
  });
  return out;
}

// gate_up (tokens, 2 * width) -> silu(gate) * up, (tokens, width).
torch::Tensor silu_and_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dtype() == torch::kFloat32 && gate_up.dim() == 2 && gate_up.is_contiguous());
  const int64_t tokens = gate_up.size(0), width = gate_up.size(1) / 2;
  auto out = torch::empty({tokens, width}, gate_up.options());
  const float* src = gate_up.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, tokens, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float *gate = src + t * 2 * width, *up = gate + width;
      float* o = dst + t * width;
      int64_t i = 0;
#ifdef VECTOR_EXP  // std::exp is scalar: this loop would cost more than the matmuls around it
      for (; i + 8 <= width; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
      }
#endif
      for (; i < width; ++i) o[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
    }
  });
  return out;
}

// buffer[loc[t]] = rows[t], converted to the buffer's dtype (round to nearest even, as torch).
template <typename Out>
static void store_rows(const torch::Tensor& rows, torch::Tensor& buffer, const int64_t* loc) {
  const int64_t tokens = rows.size(0), heads = rows.size(1), dim = rows.size(2);
  const float* src = rows.data_ptr<float>();
  Out* dst = buffer.data_ptr<Out>();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < dim; ++d)
        dst[(loc[t] * heads + h) * dim + d] =
            Out(src[t * rows.stride(0) + h * rows.stride(1) + d * rows.stride(2)]);
}

static void check_kv_rows(const torch::Tensor& rows, const torch::Tensor& buffer) {
  TORCH_CHECK(rows.dtype() == torch::kFloat32 && rows.dim() == 3, "K/V rows: 3-D float32");
  TORCH_CHECK(buffer.is_contiguous() && buffer.size(1) == rows.size(1) &&
              buffer.size(2) == rows.size(2), "K/V rows must match the buffer's heads and dim");
}

// The new tokens' K and V into their slots of one layer's buffers (float32 or bfloat16).
void store_kv(torch::Tensor k_buffer, torch::Tensor v_buffer, torch::Tensor loc, torch::Tensor k,
              torch::Tensor v) {
  check_kv_rows(k, k_buffer);
  check_kv_rows(v, v_buffer);
  TORCH_CHECK(loc.dtype() == torch::kInt64 && loc.is_contiguous() && loc.numel() == k.size(0) &&
              v.size(0) == k.size(0));
  const int64_t* slots = loc.data_ptr<int64_t>();
  for (int64_t t = 0; t < loc.numel(); ++t)
    TORCH_CHECK(slots[t] >= 0 && slots[t] < k_buffer.size(0), "K/V slot out of range");
  if (k_buffer.dtype() == torch::kFloat32) {
    store_rows<float>(k, k_buffer, slots);
    store_rows<float>(v, v_buffer, slots);
  } else {
    TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16, "K/V buffers must be float32 or bfloat16");
    store_rows<at::BFloat16>(k, k_buffer, slots);
    store_rows<at::BFloat16>(v, v_buffer, slots);
  }
}
"""
)

_FUNCTIONS = ("rms_norm", "add_rms_norm", "rotary", "silu_and_mul", "store_kv")


def load_cpu_layer_ops() -> ModuleType | None:
    """The compiled module (``_FUNCTIONS``), or None if this machine cannot build it."""
    return load_cpu_extension("radixlm_cpu_layer_ops", _SOURCE, _FUNCTIONS)


def cpu_layer_ops_for(*tensors: torch.Tensor) -> ModuleType | None:
    """The compiled ops if they can take these tensors (float32, on CPU), else None."""
    for t in tensors:  # a plain loop: this runs ~150 times per decode step
        if t.dtype != torch.float32 or t.device.type != "cpu":
            return None
    return load_cpu_layer_ops()
