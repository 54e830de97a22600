"""The small ops of a decoder layer as single CPU calls, for float32 or bfloat16 activations:
RMSNorm (with its residual add), rotary embedding, SwiGLU's ``silu(gate) * up``, the K/V
store, and greedy sampling's first maximum per row.

In a decode step of a small model each of these is a handful of torch ops on a few hundred
values: the op dispatch, not the arithmetic, is what costs (~20-40 us each as torch ops, 60-120
of them a step). One compiled call each does the same arithmetic in float32 (rounding to
bfloat16 where the torch path's bfloat16 ops would), row by row, so a row's result does not
depend on its batch. Built with the shared loader
(kernels/cpu_extension.py); None without a compiler, and callers keep their torch path.
References: ``rmsnorm_reference``, ``rotary_reference``, ``silu_and_mul_reference`` and
``store_kv_reference`` in ``kernels.reference``.
"""

from __future__ import annotations

from types import ModuleType

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import BF16_SOURCE, EXP8_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <immintrin.h>
#if defined(__AVX2__) && defined(__FMA__)
#define VECTOR_EXP 1
"""
    + EXP8_SOURCE
    + r"""
#endif
"""
    + BF16_SOURCE
    + r"""

constexpr int64_t kRowsPerTask = 16;  // small batches stay on one thread

// Activations are float32 or bfloat16; the arithmetic is float32 either way.
static inline float to_float(float x) { return x; }
static inline float to_float(at::BFloat16 x) { return static_cast<float>(x); }

// Runs the statements with T the activations' C++ type.
#define DISPATCH_ACTIVATIONS(x, ...)                                                    \
  if ((x).dtype() == torch::kFloat32) {                                                 \
    using T = float;                                                                    \
    __VA_ARGS__                                                                         \
  } else {                                                                              \
    TORCH_CHECK((x).dtype() == torch::kBFloat16, "activations must be float32 or bfloat16"); \
    using T = at::BFloat16;                                                             \
    __VA_ARGS__                                                                         \
  }

static void check_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous());
  TORCH_CHECK(weight.dtype() == x.dtype() && weight.is_contiguous() &&
              weight.numel() == x.size(1));
}

template <typename T>
static inline void normalize_row(const T* x, const T* weight, T* out, int64_t n, float eps) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += to_float(x[i]) * to_float(x[i]);
  const float scale = 1.f / std::sqrt(squares / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = T(to_float(weight[i]) * (to_float(x[i]) * scale));
}

template <typename T>
static void rms_norm_rows(const T* src, const T* weight, T* dst, int64_t rows, int64_t n,
                          float eps) {
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) normalize_row(src + r * n, weight, dst + r * n, n, eps);
  });
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  check_rows(x, weight);
  auto out = torch::empty_like(x);
  DISPATCH_ACTIVATIONS(x, rms_norm_rows(x.data_ptr<T>(), weight.data_ptr<T>(), out.data_ptr<T>(),
                                        x.size(0), x.size(1), static_cast<float>(eps));)
  return out;
}

// sum[r] += src[r] (rounded to T, as the torch path's add), then dst[r] = norm(sum[r]).
template <typename T>
static void add_rms_norm_rows(const T* src, T* sum, const T* weight, T* dst, int64_t rows,
                              int64_t n, float eps) {
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* acc = sum + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] = T(to_float(acc[i]) + to_float(src[r * n + i]));
      normalize_row(acc, weight, dst + r * n, n, eps);
    }
  });
}

// residual += x (in place); returns norm(residual).
torch::Tensor add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight,
                           double eps) {
  check_rows(x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.dtype() == x.dtype() &&
              residual.is_contiguous());
  auto out = torch::empty_like(x);
  DISPATCH_ACTIVATIONS(x, add_rms_norm_rows(x.data_ptr<T>(), residual.data_ptr<T>(),
                                            weight.data_ptr<T>(), out.data_ptr<T>(), x.size(0),
                                            x.size(1), static_cast<float>(eps));)
  return out;
}

template <typename T>
static void rotary_rows(const torch::Tensor& x, const T* c, const T* s, T* dst) {
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2), half = dim / 2;
  const int64_t token_stride = x.stride(0), head_stride = x.stride(1);
  const T* src = x.data_ptr<T>();
  at::parallel_for(0, tokens, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T *ct = c + t * dim, *st = s + t * dim;
      for (int64_t h = 0; h < heads; ++h) {
        const T* in = src + t * token_stride + h * head_stride;
        T* o = dst + (t * heads + h) * dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = to_float(in[i]), x2 = to_float(in[i + half]);
          o[i] = T(x1 * to_float(ct[i]) + x2 * to_float(st[i]));
          o[i + half] = T(x2 * to_float(ct[i + half]) + x1 * to_float(st[i + half]));
        }
      }
    }
  });
}

// x (tokens, heads, dim) with unit stride along dim; cos, sin_signed (tokens, dim). Returns a
// contiguous rotated copy: x * cos + [x2, x1] * sin_signed.
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor sin_signed) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1);
  TORCH_CHECK(cos.dtype() == x.dtype() && sin_signed.dtype() == x.dtype());
  const int64_t tokens = x.size(0), dim = x.size(2);
  TORCH_CHECK(cos.is_contiguous() && sin_signed.is_contiguous() &&
              cos.numel() == tokens * dim && sin_signed.numel() == tokens * dim);
  auto out = torch::empty({tokens, x.size(1), dim}, x.options());
  DISPATCH_ACTIVATIONS(x, rotary_rows(x, cos.data_ptr<T>(), sin_signed.data_ptr<T>(),
                                      out.data_ptr<T>());)
  return out;
}

#ifdef VECTOR_EXP
static inline __m256 load8(const float* src) { return _mm256_loadu_ps(src); }
static inline __m256 load8(const at::BFloat16* src) {  // bfloat16: a float32's upper half
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
static inline void store8(float* dst, __m256 x) { _mm256_storeu_ps(dst, x); }
static inline void store8(at::BFloat16* dst, __m256 x) {  // rounded as torch rounds
  alignas(32) float values[8];
  _mm256_store_ps(values, x);
  for (int j = 0; j < 8; ++j) dst[j] = at::BFloat16(values[j]);
}
#endif

template <typename T>
static void silu_and_mul_rows(const T* src, T* dst, int64_t tokens, int64_t width) {
  at::parallel_for(0, tokens, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T *gate = src + t * 2 * width, *up = gate + width;
      T* o = dst + t * width;
      int64_t i = 0;
#ifdef VECTOR_EXP  // std::exp is scalar: this loop would cost more than the matmuls around it
      for (; i + 8 <= width; i += 8) store8(o + i, silu_mul8(load8(gate + i), load8(up + i)));
#endif
      for (; i < width; ++i) {
        const float g = to_float(gate[i]);
        o[i] = T(g / (1.f + std::exp(-g)) * to_float(up[i]));
      }
    }
  });
}

// Index of the first maximum of row[0, width), or of its first NaN (torch.max's pick).
static int64_t first_max(const float* row, int64_t width) {
  int64_t i = 0, best = 0;
  float peak = row[0];
#if defined(__AVX512F__)
  // 16 lanes, each keeping its first maximum; then the greatest lane value, lowest index.
  __m512 peaks = _mm512_set1_ps(-INFINITY);
  __m512i where = _mm512_setzero_si512(), lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                   10, 11, 12, 13, 14, 15);
  __mmask16 nan = 0;
  for (; i + 16 <= width; i += 16) {
    const __m512 v = _mm512_loadu_ps(row + i);
    const __mmask16 greater = _mm512_cmp_ps_mask(v, peaks, _CMP_GT_OQ);
    peaks = _mm512_mask_mov_ps(peaks, greater, v);
    where = _mm512_mask_mov_epi32(where, greater, lane);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    lane = _mm512_add_epi32(lane, _mm512_set1_epi32(16));
  }
  if (nan) i = 0;  // the scalar loop below finds the first NaN
  else if (i > 0) {
    peak = _mm512_reduce_max_ps(peaks);
    const __mmask16 at_peak = _mm512_cmp_ps_mask(peaks, _mm512_set1_ps(peak), _CMP_EQ_OQ);
    best = _mm512_mask_reduce_min_epi32(at_peak, where);  // width < 2^31
  }
#endif
  for (i = std::max<int64_t>(i, 1); i < width && !std::isnan(peak); ++i) {
    if (row[i] > peak || std::isnan(row[i])) {
      peak = row[i];
      best = i;
    }
  }
  return best;
}

// Each row's first maximum, as torch.max(x, -1).indices (the first NaN where a row has one):
// 32 rows of a 49K vocabulary (a batch-32 greedy step) 0.16 ms against torch's 1.2-1.4; one
// row 7 vs 63 us.
torch::Tensor argmax_rows(torch::Tensor x) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous() && x.size(1) > 0);
  const int64_t rows = x.size(0), width = x.size(1);
  auto out = torch::empty({rows}, x.options().dtype(torch::kInt64));
  const float* src = x.data_ptr<float>();
  int64_t* index = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) index[r] = first_max(src + r * width, width);
  });
  return out;
}

// gate_up (tokens, 2 * width) -> silu(gate) * up, (tokens, width).
torch::Tensor silu_and_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous());
  const int64_t tokens = gate_up.size(0), width = gate_up.size(1) / 2;
  auto out = torch::empty({tokens, width}, gate_up.options());
  DISPATCH_ACTIVATIONS(gate_up,
                       silu_and_mul_rows(gate_up.data_ptr<T>(), out.data_ptr<T>(), tokens, width);)
  return out;
}

// to[0, n) = from[0, n) converted, where a vector loop can: returns how many it did (float32 ->
// bfloat16 with torch's rounding, to_bf16_values).
template <typename In, typename Out>
static inline int64_t convert_prefix(const In* from, Out* to, int64_t n) {
  if constexpr (std::is_same_v<In, Out>) {
    std::memcpy(to, from, n * sizeof(In));
    return n;
  } else if constexpr (std::is_same_v<In, float> && std::is_same_v<Out, at::BFloat16>) {
    to_bf16_values(from, to, n);
    return n;
  }
  return 0;
}

// buffer[loc[t]] = rows[t], converted to the buffer's dtype (round to nearest even, as torch).
// Vectorized, and split over the threads for prompt chunks: element by element on one thread,
// a 512-token prefill chunk's K and V took 1.1 ms a layer (33 of a pass's ~150 ms). A decode
// step's few rows (a few us) stay on the calling thread, without a parallel region.
template <typename In, typename Out>
static void store_rows(const torch::Tensor& rows, torch::Tensor& buffer, const int64_t* loc) {
  const int64_t tokens = rows.size(0), heads = rows.size(1), dim = rows.size(2);
  const int64_t token_stride = rows.stride(0), head_stride = rows.stride(1);
  const int64_t dim_stride = rows.stride(2);
  const In* src = rows.data_ptr<In>();
  Out* dst = buffer.data_ptr<Out>();
  constexpr int64_t kTokensPerTask = 128;
  at::parallel_for(0, tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const In* from = src + t * token_stride + h * head_stride;
        Out* to = dst + (loc[t] * heads + h) * dim;
        int64_t d = dim_stride == 1 ? convert_prefix(from, to, dim) : 0;
        for (; d < dim; ++d) to[d] = Out(to_float(from[d * dim_stride]));
      }
  });
}

static void check_kv_rows(const torch::Tensor& rows, const torch::Tensor& buffer) {
  TORCH_CHECK(rows.dim() == 3, "K/V rows: 3-D");
  TORCH_CHECK(buffer.is_contiguous() && buffer.size(1) == rows.size(1) &&
              buffer.size(2) == rows.size(2), "K/V rows must match the buffer's heads and dim");
}

template <typename T>
static void store_kv_rows(torch::Tensor& k_buffer, torch::Tensor& v_buffer, const int64_t* slots,
                          const torch::Tensor& k, const torch::Tensor& v) {
  if (k_buffer.dtype() == torch::kFloat32) {
    store_rows<T, float>(k, k_buffer, slots);
    store_rows<T, float>(v, v_buffer, slots);
  } else {
    TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16, "K/V buffers must be float32 or bfloat16");
    store_rows<T, at::BFloat16>(k, k_buffer, slots);
    store_rows<T, at::BFloat16>(v, v_buffer, slots);
  }
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
  TORCH_CHECK(v.dtype() == k.dtype());
  DISPATCH_ACTIVATIONS(k, store_kv_rows<T>(k_buffer, v_buffer, slots, k, v);)
}
"""
)

_FUNCTIONS = ("rms_norm", "add_rms_norm", "rotary", "silu_and_mul", "store_kv", "argmax_rows")


def load_cpu_layer_ops() -> ModuleType | None:
    """The compiled module (``_FUNCTIONS``), or None if this machine cannot build it."""
    return load_cpu_extension("radixlm_cpu_layer_ops", _SOURCE, _FUNCTIONS)


_ACTIVATION_DTYPES = (torch.float32, torch.bfloat16)


def cpu_layer_ops_for(*tensors: torch.Tensor) -> ModuleType | None:
    """The compiled ops if they can take these tensors (on CPU, all float32 or all bfloat16),
    else None."""
    dtype = tensors[0].dtype
    if dtype not in _ACTIVATION_DTYPES:
        return None
    for t in tensors:  # a plain loop: this runs ~150 times per decode step
        if t.dtype != dtype or t.device.type != "cpu":
            return None
    return load_cpu_layer_ops()
