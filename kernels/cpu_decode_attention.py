"""Paged decode attention on CPU: one new token per sequence, read straight from the KV pool.

The torch path gathers every sequence's K/V out of the pool into a padded copy and runs
``scaled_dot_product_attention`` on it: at 32 sequences of a few hundred tokens that is three
passes over the K/V bytes (read, write the copy, read it again) and about half of a CPU decode
step. This kernel reads each K/V row once, where it lies, so its cost is one pass.

Work items are (sequence, KV head) pairs, spread over torch's intra-op threads; each computes
the ``num_heads / num_kv_heads`` query heads that share its KV head, 64 tokens at a time: their
K (then V) rows are widened to float32 once into L1 and used by every head of the group, eight
tokens' dot products run side by side (independent FMA chains, summed in one transpose), and the
softmax's exponentials are vectorized (std::exp is scalar: it was a fifth of the kernel's time).
Each item's arithmetic
does not depend on the other rows of the batch, so a sequence gets the same output alone or
batched. Built once per machine with torch's C++ extension loader (cached under
``~/.cache/torch_extensions``); ``load_cpu_decode_attention`` returns None when no compiler
is available, and callers keep the torch path.
Reference: ``kernels.reference.paged_attention_reference``.

Layouts:
  q        (batch, num_heads, head_dim) float32
  k_buffer (num_slots, num_kv_heads, head_dim) float32 or bfloat16, v_buffer the same
  slots    (batch, max_len) int64: row b's first ``seq_lens[b]`` entries are its KV slots
  seq_lens (batch,) int64, each >= 1
  out      (batch, num_heads, head_dim) float32
  head_dim a multiple of 8 (``supports_head_dim``); AVX2 and FMA, else the kernel fails to build
"""

from __future__ import annotations

from typing import Protocol

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the CPU decode-attention kernel needs AVX2 and FMA"
#endif

// 8 floats of a K/V row, widened to float32 (bfloat16 is the upper half of a float32).
static inline __m256 load8(const float* src) { return _mm256_loadu_ps(src); }
static inline __m256 load8(const at::BFloat16* src) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

// e^x of 8 floats, x <= 0 (softmax): 2^n * p(r) with r = x - n ln 2 and a degree-7 polynomial
// (Cephes' expf coefficients), within 2 ulp of std::exp; std::exp here is scalar.
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));  // below this, 2^n leaves the float range
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}

// Lane j of the result is the sum of the 8 lanes of v[j].
static inline __m256 sum_each(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

static inline float reduce(__m256 v, __m128 (*op)(__m128, __m128)) {
  __m128 x = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = op(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(op(x, _mm_movehdup_ps(x)));
}

static inline float max_of(const float* s, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + t));
  float peak = reduce(m, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); });
  for (; t < n; ++t) peak = std::max(peak, s[t]);
  return peak;
}

// s[t] = e^(s[t] - peak) for t < n; returns their sum.
static inline float exp_in_place(float* s, int64_t n, float peak) {
  __m256 total = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(peak)));
    _mm256_storeu_ps(s + t, e);
    total = _mm256_add_ps(total, e);
  }
  float sum = reduce(total, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); });
  for (; t < n; ++t) sum += (s[t] = std::exp(s[t] - peak));
  return sum;
}

// dst[0, 8N) += sum over t < n of p[t] * rows[t * stride + (0, 8N)], N vectors in registers.
template <int N>
static inline void add_weighted_rows(const float* rows, int64_t stride, const float* p, int64_t n,
                                     float* dst) {
  __m256 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm256_loadu_ps(dst + i * 8);
  for (int64_t t = 0; t < n; ++t) {
    const __m256 weight = _mm256_set1_ps(p[t]);
    for (int i = 0; i < N; ++i)
      acc[i] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(rows + t * stride + i * 8), acc[i]);
  }
  for (int i = 0; i < N; ++i) _mm256_storeu_ps(dst + i * 8, acc[i]);
}

// The same for `vecs` vectors: blocks of 8 in registers, then the rest.
static void add_weighted_rows(const float* rows, int64_t stride, int64_t vecs, const float* p,
                              int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= vecs; i += 8) add_weighted_rows<8>(rows + i * 8, stride, p, n, dst + i * 8);
  rows += i * 8, dst += i * 8;
  switch (vecs - i) {
    case 0: break;
    case 1: add_weighted_rows<1>(rows, stride, p, n, dst); break;
    case 2: add_weighted_rows<2>(rows, stride, p, n, dst); break;
    case 3: add_weighted_rows<3>(rows, stride, p, n, dst); break;
    case 4: add_weighted_rows<4>(rows, stride, p, n, dst); break;
    case 5: add_weighted_rows<5>(rows, stride, p, n, dst); break;
    case 6: add_weighted_rows<6>(rows, stride, p, n, dst); break;
    default: add_weighted_rows<7>(rows, stride, p, n, dst); break;
  }
}

constexpr int64_t kPrefetch = 8;  // rows ahead
constexpr int64_t kSegment = 64;  // tokens whose K or V rows are widened into L1 at a time

template <typename KV>
static inline void prefetch_row(const KV* row, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < n * static_cast<int64_t>(sizeof(KV)); offset += 64)
    __builtin_prefetch(bytes + offset);
}

template <typename KV>
static void run(const float* q, const KV* k, const KV* v, const int64_t* slots,
                const int64_t* seq_lens, float* out, int64_t batch, int64_t num_heads,
                int64_t num_kv_heads, int64_t head_dim, int64_t max_len, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t row_stride = num_kv_heads * head_dim;  // elements between two KV slots
  const int64_t vecs = head_dim / 8;
  at::parallel_for(0, batch * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, rows(kSegment * head_dim), acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / num_kv_heads, kv_head = item % num_kv_heads;
      const int64_t len = seq_lens[b], padded_len = len + 8;  // room for a last 8-token store
      const int64_t* seq_slots = slots + b * max_len;
      const float* q_group = q + (b * num_heads + kv_head * group) * head_dim;
      auto row_at = [&](const KV* buffer, int64_t t) {
        return buffer + seq_slots[t] * row_stride + kv_head * head_dim;
      };
      // Rows [t0, t0 + n) of `buffer` as float32 into `rows`. Slots are scattered through the
      // pool, so each row asks for the one kPrefetch tokens ahead.
      auto widen = [&](const KV* buffer, int64_t t0, int64_t n) {
        for (int64_t t = t0; t < t0 + n; ++t) {
          if (t + kPrefetch < len) prefetch_row(row_at(buffer, t + kPrefetch), head_dim);
          const KV* src = row_at(buffer, t);
          float* dst = rows.data() + (t - t0) * head_dim;
          for (int64_t i = 0; i < vecs; ++i) _mm256_storeu_ps(dst + i * 8, load8(src + i * 8));
        }
      };
      scores.assign(group * padded_len, 0.f);
      for (int64_t t0 = 0; t0 < len; t0 += kSegment) {
        const int64_t n = std::min(kSegment, len - t0);
        widen(k, t0, n);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = q_group + g * head_dim;
          for (int64_t j0 = 0; j0 < n; j0 += 8) {  // 8 tokens' dot products side by side
            const float* row[8];
            for (int j = 0; j < 8; ++j) row[j] = rows.data() + std::min(j0 + j, n - 1) * head_dim;
            __m256 part[8];
            for (int j = 0; j < 8; ++j) part[j] = _mm256_setzero_ps();
            for (int64_t i = 0; i < vecs; ++i) {
              const __m256 qv = _mm256_loadu_ps(qg + i * 8);
              for (int j = 0; j < 8; ++j)
                part[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row[j] + i * 8), part[j]);
            }
            // Lanes past n land in the next segment's places (rewritten there) or the padding.
            _mm256_storeu_ps(scores.data() + g * padded_len + t0 + j0,
                             _mm256_mul_ps(sum_each(part), _mm256_set1_ps(scale)));
          }
        }
      }
      std::vector<float> totals(group);
      for (int64_t g = 0; g < group; ++g) {  // softmax, kept unnormalised until the end
        float* s = scores.data() + g * padded_len;
        totals[g] = exp_in_place(s, len, max_of(s, len));
      }
      acc.assign(group * head_dim, 0.f);
      for (int64_t t0 = 0; t0 < len; t0 += kSegment) {
        const int64_t n = std::min(kSegment, len - t0);
        widen(v, t0, n);
        for (int64_t g = 0; g < group; ++g)
          add_weighted_rows(rows.data(), head_dim, vecs, scores.data() + g * padded_len + t0, n,
                            acc.data() + g * head_dim);
      }
      for (int64_t g = 0; g < group; ++g) {
        float* o = out + (b * num_heads + kv_head * group + g) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] = acc[g * head_dim + d] / totals[g];
      }
    }
  });
}

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                               torch::Tensor slots, torch::Tensor seq_lens, double scale) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.is_contiguous() && q.dim() == 3);
  TORCH_CHECK(k_buffer.dtype() == v_buffer.dtype() && k_buffer.is_contiguous() &&
              v_buffer.is_contiguous());
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.is_contiguous() && slots.dim() == 2);
  TORCH_CHECK(seq_lens.dtype() == torch::kInt64 && seq_lens.is_contiguous());
  const int64_t batch = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_buffer.size(1);
  TORCH_CHECK(k_buffer.size(2) == head_dim && num_heads % num_kv_heads == 0);
  TORCH_CHECK(head_dim % 8 == 0, "head_dim must be a multiple of 8");
  TORCH_CHECK(slots.size(0) == batch && seq_lens.size(0) == batch);
  auto out = torch::empty_like(q);
  if (k_buffer.dtype() == torch::kFloat32) {
    run(q.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
        slots.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), out.data_ptr<float>(), batch,
        num_heads, num_kv_heads, head_dim, slots.size(1), static_cast<float>(scale));
  } else {
    TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16, "K/V must be float32 or bfloat16");
    run(q.data_ptr<float>(), k_buffer.data_ptr<at::BFloat16>(),
        v_buffer.data_ptr<at::BFloat16>(), slots.data_ptr<int64_t>(),
        seq_lens.data_ptr<int64_t>(), out.data_ptr<float>(), batch, num_heads, num_kv_heads,
        head_dim, slots.size(1), static_cast<float>(scale));
  }
  return out;
}
"""


class CpuDecodeAttention(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k_buffer: torch.Tensor,
        v_buffer: torch.Tensor,
        slots: torch.Tensor,
        seq_lens: torch.Tensor,
        scale: float,
    ) -> torch.Tensor: ...


def supports_head_dim(head_dim: int) -> bool:
    return head_dim % 8 == 0


def load_cpu_decode_attention() -> CpuDecodeAttention | None:
    """The compiled kernel (built on first use, then loaded from the cache), or None if this
    machine cannot build it."""
    module = load_cpu_extension("radixlm_cpu_decode_attention", _SOURCE, ("decode_attention",))
    return None if module is None else module.decode_attention
