"""Paged decode attention on CPU: one new token per sequence, read straight from the KV pool.

The torch path gathers every sequence's K/V out of the pool into a padded copy and runs
``scaled_dot_product_attention`` on it: at 32 sequences of a few hundred tokens that is three
passes over the K/V bytes (read, write the copy, read it again) and about half of a CPU decode
step. This kernel reads each K/V row once, where it lies, so its cost is one pass.

Work units are (sequence, KV head, chunk of 128 tokens), spread over torch's intra-op threads;
each computes the ``num_heads / num_kv_heads`` query heads that share its KV head, and a second
pass merges a sequence's chunks (flash-decoding). Chunks have a fixed size, so a unit's
arithmetic does not depend on the other rows of the batch: a sequence gets the same output
alone or batched, and a single long sequence still uses every thread. Built once per machine with torch's C++ extension loader (cached under
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

// Work units are (sequence, KV head, chunk of kChunk tokens): a fixed size, so a sequence is cut
// the same way in any batch (its sums never depend on its neighbours), and one long sequence
// still spreads over every thread.
constexpr int64_t kChunk = 128;

template <typename KV>
static void run(const float* q, const KV* k, const KV* v, const int64_t* slots,
                const int64_t* seq_lens, float* out, int64_t batch, int64_t num_heads,
                int64_t num_kv_heads, int64_t head_dim, int64_t max_len, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t row_stride = num_kv_heads * head_dim;  // elements between two KV slots
  std::vector<int64_t> first_chunk(batch + 1, 0);  // units of sequence b start at first * heads
  for (int64_t b = 0; b < batch; ++b)
    first_chunk[b + 1] = first_chunk[b] + (seq_lens[b] + kChunk - 1) / kChunk;
  const int64_t units = first_chunk[batch] * num_kv_heads;
  // Per unit and query head: the chunk's score peak, its sum of exp(score - peak), and the
  // exp-weighted sum of V rows.
  std::vector<float> peaks(units * group), sums(units * group), accs(units * group * head_dim);
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(group * kChunk), row(head_dim);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t kv_head = unit % num_kv_heads, chunk_index = unit / num_kv_heads;
      const int64_t b = std::upper_bound(first_chunk.begin(), first_chunk.end(), chunk_index) -
                        first_chunk.begin() - 1;
      const int64_t t0 = (chunk_index - first_chunk[b]) * kChunk;
      const int64_t n = std::min(kChunk, seq_lens[b] - t0);
      const int64_t* chunk_slots = slots + b * max_len + t0;
      const float* q_group = q + (b * num_heads + kv_head * group) * head_dim;
      // This head's row of token t; slots are scattered through the pool, so each loop asks
      // for the rows kPrefetch tokens ahead.
      auto row_at = [&](const KV* buffer, int64_t t) {
        return buffer + chunk_slots[t] * row_stride + kv_head * head_dim;
      };
      for (int64_t t = 0; t < n; ++t) {
        if (t + kPrefetch < n) prefetch_row(row_at(k, t + kPrefetch), head_dim);
        load_row(row_at(k, t), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = q_group + g * head_dim;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < head_dim; ++d) dot += qg[d] * row[d];
          scores[g * kChunk + t] = dot * scale;
        }
      }
      for (int64_t g = 0; g < group; ++g) {  // softmax, kept unnormalised until the merge
        float* s = scores.data() + g * kChunk;
        float peak = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) peak = std::max(peak, s[t]);
        float total = 0.f;
#pragma omp simd reduction(+ : total)
        for (int64_t t = 0; t < n; ++t) {
          s[t] = std::exp(s[t] - peak);
          total += s[t];
        }
        peaks[unit * group + g] = peak;
        sums[unit * group + g] = total;
      }
      float* acc = accs.data() + unit * group * head_dim;
      std::fill(acc, acc + group * head_dim, 0.f);
      for (int64_t t = 0; t < n; ++t) {
        if (t + kPrefetch < n) prefetch_row(row_at(v, t + kPrefetch), head_dim);
        load_row(row_at(v, t), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * kChunk + t];
          float* a = acc + g * head_dim;
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) a[d] += p * row[d];
        }
      }
    }
  });
  // Merge each (sequence, query head)'s chunks in order, rescaled to the overall peak.
  at::parallel_for(0, batch * num_heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> merged(head_dim);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / num_heads, head = item % num_heads;
      const int64_t kv_head = head / group, g = head % group;
      auto at_chunk = [&](int64_t c) { return (c * num_kv_heads + kv_head) * group + g; };
      float peak = -std::numeric_limits<float>::infinity();
      for (int64_t c = first_chunk[b]; c < first_chunk[b + 1]; ++c)
        peak = std::max(peak, peaks[at_chunk(c)]);
      float total = 0.f;
      std::fill(merged.begin(), merged.end(), 0.f);
      for (int64_t c = first_chunk[b]; c < first_chunk[b + 1]; ++c) {
        const float weight = std::exp(peaks[at_chunk(c)] - peak);
        total += sums[at_chunk(c)] * weight;
        const float* a = accs.data() + at_chunk(c) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) merged[d] += a[d] * weight;
      }
      float* o = out + item * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) o[d] = merged[d] / total;
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
