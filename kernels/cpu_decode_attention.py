"""Paged decode attention on CPU: one new token per sequence, read straight from the KV pool.

The torch path gathers every sequence's K/V out of the pool into a padded copy and runs
``scaled_dot_product_attention`` on it: at 32 sequences of a few hundred tokens that is three
passes over the K/V bytes (read, write the copy, read it again) and about half of a CPU decode
step. This kernel reads each K/V row once, where it lies, so its cost is one pass.

Work items are (sequence, KV head) pairs, spread over torch's intra-op threads; each computes
the ``num_heads / num_kv_heads`` query heads that share its KV head. Each item's arithmetic
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
"""

from __future__ import annotations

from typing import Protocol

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

// One K/V row to float32 (bfloat16 is the upper half of a float32).
static inline void load_row(const float* src, float* dst, int64_t n) {
  std::memcpy(dst, src, n * sizeof(float));
}
static inline void load_row(const at::BFloat16* src, float* dst, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t wide = static_cast<uint32_t>(bits[i]) << 16;
    float value;
    std::memcpy(&value, &wide, sizeof(value));
    dst[i] = value;
  }
}

constexpr int64_t kPrefetch = 8;  // rows ahead

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
  at::parallel_for(0, batch * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, row(head_dim), acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / num_kv_heads, kv_head = item % num_kv_heads;
      const int64_t len = seq_lens[b];
      const int64_t* seq_slots = slots + b * max_len;
      const float* q_group = q + (b * num_heads + kv_head * group) * head_dim;
      // This head's row of token t; slots are scattered through the pool, so each loop asks
      // for the rows kPrefetch tokens ahead.
      auto row_at = [&](const KV* buffer, int64_t t) {
        return buffer + seq_slots[t] * row_stride + kv_head * head_dim;
      };
      scores.assign(group * len, 0.f);
      for (int64_t t = 0; t < len; ++t) {
        if (t + kPrefetch < len) prefetch_row(row_at(k, t + kPrefetch), head_dim);
        load_row(row_at(k, t), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = q_group + g * head_dim;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < head_dim; ++d) dot += qg[d] * row[d];
          scores[g * len + t] = dot * scale;
        }
      }
      for (int64_t g = 0; g < group; ++g) {  // softmax, kept unnormalised until the end
        float* s = scores.data() + g * len;
        float peak = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < len; ++t) peak = std::max(peak, s[t]);
        for (int64_t t = 0; t < len; ++t) s[t] = std::exp(s[t] - peak);
      }
      acc.assign(group * head_dim, 0.f);
      for (int64_t t = 0; t < len; ++t) {
        if (t + kPrefetch < len) prefetch_row(row_at(v, t + kPrefetch), head_dim);
        load_row(row_at(v, t), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * len + t];
          float* a = acc.data() + g * head_dim;
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) a[d] += p * row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float total = 0.f;
        for (int64_t t = 0; t < len; ++t) total += scores[g * len + t];
        float* o = out + (b * num_heads + kv_head * group + g) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] = acc[g * head_dim + d] / total;
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


def load_cpu_decode_attention() -> CpuDecodeAttention | None:
    """The compiled kernel (built on first use, then loaded from the cache), or None if this
    machine cannot build it."""
    module = load_cpu_extension("radixlm_cpu_decode_attention", _SOURCE, ("decode_attention",))
    return None if module is None else module.decode_attention
