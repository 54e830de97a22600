"""Paged attention on CPU for decode and prefill alike, read straight from the KV pool.

Sequence ``b`` brings ``extend_lens[b]`` new tokens (1 in decode, a prompt chunk in prefill, a
token plus its jump-forwarded text in between) at the last positions of its ``seq_lens[b]``;
new token ``t`` sees keys ``0 .. seq_len - extend_len + t`` (causal over prefix + new). The
torch path gathers every sequence's K/V out of the pool into padded copies for SDPA: three
passes over the K/V bytes, per-shape padding, one SDPA call per long prompt. This kernel reads
each K/V row where it lies and serves a whole batch, any mix of decode and prefill, in one call.

Work items are (sequence, up to 8 consecutive new tokens, every KV head), costliest first,
handed out one at a time to torch's intra-op threads (causal items differ in cost by up to the
sequence length); a batch with too few of them for the threads splits them per KV head. An
item covers all its KV heads so that a slot's K (or V) row is read as one contiguous block,
not as per-head slices scattered through the pool (decode at 32 sequences: 1.16-1.30x faster).
It computes every query head of those KV heads, 64 keys at a time: their K (then V) rows are
widened to float32 once into L2 and used by all of the item's query rows;
eight keys' dot products run side by side (independent FMA chains, summed in one transpose);
the softmax's exponentials are vectorized (std::exp is scalar: it was a fifth of the kernel's
time). A query row's arithmetic depends only on its own query and keys, so a token gets the
same bits alone or batched, and as a decode row or inside a prefill chunk. Built once per
machine with torch's C++ extension loader (cached under ``~/.cache/torch_extensions``);
``load_cpu_paged_attention`` returns None when no compiler is available, and callers keep the
torch path.
Reference: ``kernels.reference.paged_attention_reference``.

Layouts:
  q           (sum(extend_lens), num_heads, head_dim) float32, sequence after sequence
  k_buffer    (num_slots, num_kv_heads, head_dim) float32 or bfloat16, v_buffer the same
  slots       (batch, max_len) int64: row b's first ``seq_lens[b]`` entries are its KV slots
  seq_lens    (batch,) int64; extend_lens (batch,) int64, 1 <= extend_lens[b] <= seq_lens[b]
  out         like q
  head_dim a multiple of 8 (``supports_head_dim``); AVX2 and FMA, else the kernel fails to build
"""

from __future__ import annotations

from typing import Protocol

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import EXP8_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <atomic>
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

"""
    + EXP8_SOURCE
    + r"""
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
constexpr int64_t kSegment = 64;  // tokens whose K or V rows are widened at a time (12-48 KB)

template <typename KV>
static inline void prefetch_row(const KV* row, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < n * static_cast<int64_t>(sizeof(KV)); offset += 64)
    __builtin_prefetch(bytes + offset);
}

// One work item: the `num_tokens` new tokens from `first_token` of sequence `seq`, against KV
// heads [first_head, end_head), with every query head of their groups.
struct Item {
  int64_t seq, first_head, end_head, first_token, num_tokens, cost;
};

constexpr int64_t kTokensPerItem = 8;  // new tokens of one sequence that share widened rows

template <typename KV>
static void run(const float* q, const KV* k, const KV* v, const int64_t* slots,
                const int64_t* seq_lens, const int64_t* extend_lens, float* out, int64_t batch,
                int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t max_len,
                float scale) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t row_stride = num_kv_heads * head_dim;  // elements between two KV slots
  const int64_t vecs = head_dim / 8;
  std::vector<int64_t> q_start(batch);  // row of q holding sequence b's first new token
  int64_t chunks = 0;
  for (int64_t b = 0; b < batch; ++b) chunks += (extend_lens[b] + kTokensPerItem - 1) / kTokensPerItem;
  // An item covers every KV head of its tokens, so a slot's K (or V) row is read as one
  // contiguous block; with too few items for the threads, one KV head each instead.
  const int64_t heads_per_item = chunks >= 4 * at::get_num_threads() ? num_kv_heads : 1;
  std::vector<Item> items;
  for (int64_t b = 0, row = 0; b < batch; row += extend_lens[b], ++b) {
    q_start[b] = row;
    const int64_t prefix = seq_lens[b] - extend_lens[b];
    for (int64_t t0 = 0; t0 < extend_lens[b]; t0 += kTokensPerItem) {
      const int64_t n = std::min(kTokensPerItem, extend_lens[b] - t0);
      for (int64_t h = 0; h < num_kv_heads; h += heads_per_item)
        items.push_back({b, h, h + heads_per_item, t0, n, n * (prefix + t0 + n)});
    }
  }
  // Costliest first, handed out one at a time: causal items differ in cost by up to the
  // sequence length, so a static split would leave one thread waiting for the other.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.cost > b.cost; });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> scores, rows, acc;
    std::vector<int64_t> visible;
    std::vector<float> totals;
    for (int64_t index = next++; index < static_cast<int64_t>(items.size()); index = next++) {
      const Item& item = items[index];
      const int64_t b = item.seq, h0 = item.first_head;
      const int64_t width = (item.end_head - h0) * head_dim;  // widened elements per token
      const int64_t prefix = seq_lens[b] - extend_lens[b];
      const int64_t len = prefix + item.first_token + item.num_tokens;  // keys any row sees
      const int64_t padded_len = len + 8;  // room for a last 8-key store
      // Row r: token r / token_rows; query head h0 * group + r % token_rows, whose KV head is
      // h0 + (r % token_rows) / group.
      const int64_t token_rows = (item.end_head - h0) * group;
      const int64_t num_rows = item.num_tokens * token_rows;
      const int64_t* seq_slots = slots + b * max_len;
      auto q_row = [&](int64_t r) {
        return q + ((q_start[b] + item.first_token + r / token_rows) * num_heads + h0 * group +
                    r % token_rows) * head_dim;
      };
      auto head_offset = [&](int64_t r) { return (r % token_rows) / group * head_dim; };
      visible.resize(num_rows);
      for (int64_t r = 0; r < num_rows; ++r)
        visible[r] = prefix + item.first_token + r / token_rows + 1;
      rows.resize(kSegment * width);
      // Tokens [t0, t0 + n) of `buffer`, the item's heads, as float32 into `rows`. Slots are
      // scattered through the pool, so each token asks for the one kPrefetch tokens ahead.
      auto widen = [&](const KV* buffer, int64_t t0, int64_t n) {
        for (int64_t t = t0; t < t0 + n; ++t) {
          if (t + kPrefetch < len)
            prefetch_row(buffer + seq_slots[t + kPrefetch] * row_stride + h0 * head_dim, width);
          const KV* src = buffer + seq_slots[t] * row_stride + h0 * head_dim;
          float* dst = rows.data() + (t - t0) * width;
          for (int64_t i = 0; i < width; i += 8) _mm256_storeu_ps(dst + i, load8(src + i));
        }
      };
      scores.assign(num_rows * padded_len, 0.f);
      for (int64_t t0 = 0; t0 < len; t0 += kSegment) {
        const int64_t n = std::min(kSegment, len - t0);
        widen(k, t0, n);
        for (int64_t r = 0; r < num_rows; ++r) {
          const int64_t m = std::min(n, visible[r] - t0);  // keys of this segment row r sees
          const float* qr = q_row(r);
          const float* keys = rows.data() + head_offset(r);
          for (int64_t j0 = 0; j0 < m; j0 += 8) {  // 8 keys' dot products side by side
            const float* row[8];
            for (int j = 0; j < 8; ++j) row[j] = keys + std::min(j0 + j, n - 1) * width;
            __m256 part[8];
            for (int j = 0; j < 8; ++j) part[j] = _mm256_setzero_ps();
            for (int64_t i = 0; i < vecs; ++i) {
              const __m256 qv = _mm256_loadu_ps(qr + i * 8);
              for (int j = 0; j < 8; ++j)
                part[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row[j] + i * 8), part[j]);
            }
            // Lanes past m land on places rewritten later or never read (the padding).
            _mm256_storeu_ps(scores.data() + r * padded_len + t0 + j0,
                             _mm256_mul_ps(sum_each(part), _mm256_set1_ps(scale)));
          }
        }
      }
      totals.resize(num_rows);
      for (int64_t r = 0; r < num_rows; ++r) {  // softmax, kept unnormalised until the end
        float* s = scores.data() + r * padded_len;
        totals[r] = exp_in_place(s, visible[r], max_of(s, visible[r]));
      }
      acc.assign(num_rows * head_dim, 0.f);
      for (int64_t t0 = 0; t0 < len; t0 += kSegment) {
        const int64_t n = std::min(kSegment, len - t0);
        widen(v, t0, n);
        for (int64_t r = 0; r < num_rows; ++r)
          add_weighted_rows(rows.data() + head_offset(r), width, vecs,
                            scores.data() + r * padded_len + t0, std::min(n, visible[r] - t0),
                            acc.data() + r * head_dim);
      }
      for (int64_t r = 0; r < num_rows; ++r) {
        float* o = out + (q_row(r) - q);
        for (int64_t d = 0; d < head_dim; ++d) o[d] = acc[r * head_dim + d] / totals[r];
      }
    }
  });
}

torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                              torch::Tensor slots, torch::Tensor seq_lens,
                              torch::Tensor extend_lens, double scale) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.is_contiguous() && q.dim() == 3);
  TORCH_CHECK(k_buffer.dtype() == v_buffer.dtype() && k_buffer.is_contiguous() &&
              v_buffer.is_contiguous());
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.is_contiguous() && slots.dim() == 2);
  TORCH_CHECK(seq_lens.dtype() == torch::kInt64 && seq_lens.is_contiguous());
  TORCH_CHECK(extend_lens.dtype() == torch::kInt64 && extend_lens.is_contiguous());
  const int64_t batch = slots.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_buffer.size(1);
  TORCH_CHECK(k_buffer.size(2) == head_dim && num_heads % num_kv_heads == 0);
  TORCH_CHECK(head_dim % 8 == 0, "head_dim must be a multiple of 8");
  TORCH_CHECK(seq_lens.size(0) == batch && extend_lens.size(0) == batch);
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  const int64_t* news = extend_lens.data_ptr<int64_t>();
  int64_t num_tokens = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(news[b] >= 1 && news[b] <= lens[b] && lens[b] <= slots.size(1));
    num_tokens += news[b];
  }
  TORCH_CHECK(q.size(0) == num_tokens, "q must hold every sequence's new tokens");
  auto out = torch::empty_like(q);
  if (k_buffer.dtype() == torch::kFloat32) {
    run(q.data_ptr<float>(), k_buffer.data_ptr<float>(), v_buffer.data_ptr<float>(),
        slots.data_ptr<int64_t>(), lens, news, out.data_ptr<float>(), batch, num_heads,
        num_kv_heads, head_dim, slots.size(1), static_cast<float>(scale));
  } else {
    TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16, "K/V must be float32 or bfloat16");
    run(q.data_ptr<float>(), k_buffer.data_ptr<at::BFloat16>(),
        v_buffer.data_ptr<at::BFloat16>(), slots.data_ptr<int64_t>(), lens, news,
        out.data_ptr<float>(), batch, num_heads, num_kv_heads, head_dim, slots.size(1),
        static_cast<float>(scale));
  }
  return out;
}
"""
)


class CpuPagedAttention(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k_buffer: torch.Tensor,
        v_buffer: torch.Tensor,
        slots: torch.Tensor,
        seq_lens: torch.Tensor,
        extend_lens: torch.Tensor,
        scale: float,
    ) -> torch.Tensor: ...


def supports_head_dim(head_dim: int) -> bool:
    return head_dim % 8 == 0


def load_cpu_paged_attention() -> CpuPagedAttention | None:
    """The compiled kernel (built on first use, then loaded from the cache), or None if this
    machine cannot build it."""
    module = load_cpu_extension("radixlm_cpu_paged_attention", _SOURCE, ("paged_attention",))
    return None if module is None else module.paged_attention
