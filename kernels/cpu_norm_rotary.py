"""RMSNorm (with its residual add) and rotary embedding as single CPU ops, for float32.

In a decode step of a small model each of these is a handful of torch ops on a few hundred
values: the op dispatch, not the arithmetic, is what costs (61 norms and 30 rotaries a step,
~20 us each as torch ops). One compiled call each does the same arithmetic in float32, row by
row, so a row's result does not depend on its batch. Built with the shared loader
(kernels/cpu_extension.py); None without a compiler, and callers keep their torch path.
References: ``kernels.reference.rmsnorm_reference``, ``kernels.reference.rotary_reference``.
"""

from __future__ import annotations

from types import ModuleType

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

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
"""


def load_cpu_norm_rotary() -> ModuleType | None:
    """The compiled module (``rms_norm``, ``add_rms_norm``, ``rotary``), or None if this
    machine cannot build it."""
    return load_cpu_extension(
        "radixlm_cpu_norm_rotary", _SOURCE, ("rms_norm", "add_rms_norm", "rotary")
    )


def cpu_norm_rotary_for(*tensors: torch.Tensor) -> ModuleType | None:
    """The compiled ops if they can take these tensors (float32, on CPU), else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return load_cpu_norm_rotary()
    return None
