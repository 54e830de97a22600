"""Paged attention on CPU for decode and prefill alike, read straight from the KV pool.

Sequence ``b`` brings ``extend_lens[b]`` new tokens (1 in decode, a prompt chunk in prefill, a
token plus its jump-forwarded text in between) at the last positions of its ``seq_lens[b]``;
new token ``t`` sees keys ``0 .. seq_len - extend_len + t`` (causal over prefix + new). The
torch path gathers every sequence's K/V out of the pool into padded copies for SDPA: three
passes over the K/V bytes, per-shape padding, one SDPA call per long prompt. This kernel reads
each K/V row where it lies and serves a whole batch, any mix of decode and prefill, in one call.

Work items are (sequence, up to 8 consecutive new tokens, every KV head), costliest first,
handed out one at a time to torch's intra-op threads (causal items differ in cost by up to the
sequence length); a batch with too few of them for the threads splits them per KV head. Keys
go in blocks of 16 (8 with AVX2): a block's K rows (prefetched two blocks ahead, each pool row
read once for all the item's heads) are widened to float32 once into L1 for all the item's
query rows (per head, its group of query heads x its tokens); a row's score is one FMA chain per
lane over its head's vectors, the query held in registers, and the block's 16 dot vectors are
summed across lanes in one fixed tree in registers. With AVX512-BF16 and a bfloat16 pool
(head_dim 32 and up) the block is not widened: each key's dot vectors are VDPBF16PS products
of the pool row with the query rounded to bfloat16 (``rounds_bf16_queries``), two dimensions
a lane, then the same tree. (Before, each key's dot vectors went
through memory per row and eight keys were summed at a time, the same additions: a prefill of
2 x 256 tokens 1.14-1.25x slower, 8 x 64 tokens over 576 1.13-1.20x, decode 32 x 320 from DRAM
the same.) Each V row is read once per chunk of up to 6 query rows (4 with AVX2), whose
accumulators stay in registers. (The kernel before widened 64 K / V rows into an L2 buffer and
re-read them per query row: 2.6x slower on decode, 32 sequences of 320 tokens.) The softmax's
exponentials are vectorized, 16 at a time (std::exp is scalar). A query row's arithmetic
depends only on its own query and keys (probabilities past a row's last key are exact zeros),
so a token gets the same bits alone or batched, and as a decode row or inside a prefill chunk.
Where the pool is bfloat16 and the CPU has AMX, the attention backend gives prompt tokens to
kernels/cpu_amx_attention.py instead (``skip_rows``; 2.1-3.0x faster there, different
rounding), and generated tokens, however they arrive, to this kernel.
Decode rows whose sequences start with the same pool slots (a prefix the radix cache shares)
go in items of up to 8 such sequences: their 3 query rows each (at GQA 3) would widen every
K row for 3 rows and read every V row for 3; together they do it once for 24 rows over the
shared keys, then each sequence's own keys follow, its value sums carried over exactly (the
same bits as alone). On 8 groups x 16 decode rows of 520 shared + 80 own keys, 30 layers from
memory, 1.17-1.24x; generated-shared-prefix serving with the radix cache, alternating runs,
331.6 / 434.3 vs 295.9 / 395.7 tok/s.
16-wide vectors with AVX-512, else 8. Built once per machine with torch's C++ extension loader
(cached under ``~/.cache/torch_extensions``); ``load_cpu_paged_attention`` returns None when no
compiler is available, and callers keep the torch path.
Reference: ``kernels.reference.paged_attention_reference``.

Layouts:
  q           (sum(extend_lens), num_heads, head_dim) float32, sequence after sequence; each
              token's heads contiguous, tokens any stride apart (a view of a wider row)
  k_buffer    (num_slots, num_kv_heads, head_dim) float32 or bfloat16, v_buffer the same
  slots       (batch, max_len) int64: row b's first ``seq_lens[b]`` entries are its KV slots
  seq_lens    (batch,) int64; extend_lens (batch,) int64, 1 <= extend_lens[b] <= seq_lens[b]
  skip_rows   (batch,) int64: sequence b's first skip_rows[b] new tokens are left to another
              kernel (kernels/cpu_amx_attention.py takes prompt tokens), their out rows unwritten
  out         (sum(extend_lens), num_heads, head_dim) float32, contiguous
  head_dim 16, 32, 64 or 128 (``supports_head_dim``); AVX2 and FMA, else the kernel fails to build
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import EXP8_SOURCE, VEC_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the CPU decode-attention kernel needs AVX2 and FMA"
#endif
"""
    + VEC_SOURCE
    + EXP8_SOURCE
    + r"""
// Lane j of the result is the sum of the 8 lanes of v[j].
static inline __m256 sum_each(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Lane j of the result is the sum of the lanes of d[j], for kLanes keys' dot vectors d: with
// 16 lanes, each key's lanes l and l + 8 first (fold), then the tree of sum_each, for 16 keys
// at once in registers (exactly the additions of fold + sum_each, in the same order).
#if defined(__AVX512F__)
static inline __m512 pair_sums(__m512 a, __m512 b) {  // hadd per 128-bit lane
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

static inline __m512 sum_lanes_of_keys(const __m512* d) {
  __m512 folded[8], pairs[4];
  for (int j = 0; j < 8; ++j)  // key j's folded lanes in lanes 0-7, key j + 8's in 8-15
    folded[j] = _mm512_add_ps(_mm512_shuffle_f32x4(d[j], d[j + 8], 0x44),
                              _mm512_shuffle_f32x4(d[j], d[j + 8], 0xEE));
  for (int j = 0; j < 4; ++j) pairs[j] = pair_sums(folded[2 * j], folded[2 * j + 1]);
  const __m512 low = pair_sums(pairs[0], pairs[1]);   // keys 0-3 and 8-11: lanes 0-3, 4-7
  const __m512 high = pair_sums(pairs[2], pairs[3]);  // keys 4-7 and 12-15
  const __m512 sums = _mm512_add_ps(_mm512_shuffle_f32x4(low, high, 0x88),
                                    _mm512_shuffle_f32x4(low, high, 0xDD));
  return _mm512_shuffle_f32x4(sums, sums, 0xD8);  // keys 0-3, 8-11, 4-7, 12-15 -> in order
}
#else
static inline __m256 sum_lanes_of_keys(const __m256* d) { return sum_each(d); }
#endif

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

// s[t] = e^(s[t] - peak) for t < n; returns their sum: 8 running lane sums (t mod 8, in order
// of t), then reduce's tree, then the last n mod 8 values one by one.
static inline float exp_in_place(float* s, int64_t n, float peak) {
  __m256 total = _mm256_setzero_ps();
  int64_t t = 0;
#if defined(__AVX512F__)
  for (; t + 16 <= n; t += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + t), _mm512_set1_ps(peak)));
    _mm512_storeu_ps(s + t, e);
    total = _mm256_add_ps(total, _mm512_castps512_ps256(e));
    total = _mm256_add_ps(total, _mm512_extractf32x8_ps(e, 1));
  }
#endif
  for (; t + 8 <= n; t += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(peak)));
    _mm256_storeu_ps(s + t, e);
    total = _mm256_add_ps(total, e);
  }
  float sum = reduce(total, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); });
  for (; t < n; ++t) sum += (s[t] = std::exp(s[t] - peak));
  return sum;
}

// Keys ahead (two key blocks); 16 left decode from DRAM 4 % slower.
constexpr int64_t kPrefetch = 32;

// Into L2 (prefetcht1), not L1: decode 32 x 320 from DRAM on AMD Zen 4, 30 layers, 18.6 ->
// 11.9 ms with a bfloat16 pool, 33.0 -> 21.9 ms with float32 (L1's few miss buffers dropped
// prefetches, it seems); 64 keys ahead instead of 32 the same.
template <typename KV>
static inline void prefetch_row(const KV* row, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < n * static_cast<int64_t>(sizeof(KV)); offset += 64)
    __builtin_prefetch(bytes + offset, 0, 2);
}

// One KV head's view of a work item: `rows` query rows (token-major, then the head's group),
// each with its own row of q and of out, seeing keys [0, visible[r]) of `slots`.
template <typename KV>
struct HeadRows {
  const KV* k;  // the head's first element in slot 0; slots are `stride` elements apart
  const KV* v;
  int64_t stride;
  const int64_t* slots;
  int64_t len;  // keys any row sees
  int64_t rows;
  const float* const* q;  // per row
  const int64_t* visible;
};

// scores[h * head_stride + r * padded + t] = scale * q_hr . k_ht for begin <= t < len (begin a
// multiple of kLanes) and each of the `nh` heads of the same keys, kLanes keys at a time: the
// block's K rows (each pool row read once, every head's part) are widened to float32 once
// (`block`, in L1) for all the query rows; a
// row's dot product with a key is one FMA chain per lane over its V vectors, and the block's
// kLanes of them are summed across lanes in one fixed tree (sum_lanes_of_keys), the query's
// vectors held in registers. Keys past len (up to the block's end) and rows past their visible
// keys get scores that are never read.
// With AVX512-BF16 and a bfloat16 pool, a key's dot products come from the pool row itself:
// each VDPBF16PS multiplies two of the row's bfloat16 pairs by the query's (rounded to bfloat16
// once per row and block), half the instructions of the widened FMA chain and no widening.
#if defined(__AVX512BF16__)
constexpr bool kBf16DotScores = true;
#else
constexpr bool kBf16DotScores = false;
#endif

template <int V, typename KV>
constexpr bool dot_scores = kBf16DotScores && std::is_same_v<KV, at::BFloat16> && V % 2 == 0;

template <int V, typename KV>
static inline __attribute__((always_inline)) void scores_of(const HeadRows<KV>* heads, int64_t nh, float scale, int64_t padded,
                      int64_t head_stride, int64_t begin, float* scores,
                      std::vector<float>& block) {
  const int64_t len = heads[0].len, rows = heads[0].rows;
#if defined(__AVX512BF16__)
  if constexpr (dot_scores<V, KV>) {
    constexpr int kPairs = V / 2;  // 32 bfloat16 (16 pairs) a vector
    for (int64_t t0 = begin; t0 < len; t0 += kLanes) {
      for (int64_t j = 0; j < kLanes && t0 + j + kPrefetch < len; ++j)
        prefetch_row(heads[0].k + heads[0].slots[t0 + j + kPrefetch] * heads[0].stride,
                     nh * V * kLanes);
      for (int64_t h = 0; h < nh; ++h) {
        const KV* keys[kLanes];  // past len: the last key again, its score never read
        for (int64_t j = 0; j < kLanes; ++j)
          keys[j] = heads[h].k + heads[h].slots[std::min(t0 + j, len - 1)] * heads[h].stride;
        for (int64_t r = 0; r < rows; ++r) {
          const float* q = heads[h].q[r];
          __m512bh query[kPairs];
#pragma GCC unroll 8
          for (int i = 0; i < kPairs; ++i)
            query[i] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 32 * i + 16),
                                           _mm512_loadu_ps(q + 32 * i));
          Vec dot[kLanes];
#pragma GCC unroll 16
          for (int j = 0; j < kLanes; ++j) {
            dot[j] = _mm512_dpbf16_ps(_mm512_setzero_ps(), query[0],
                                      (__m512bh)_mm512_loadu_si512(keys[j]));
#pragma GCC unroll 8
            for (int i = 1; i < kPairs; ++i)
              dot[j] = _mm512_dpbf16_ps(dot[j], query[i],
                                        (__m512bh)_mm512_loadu_si512(keys[j] + 32 * i));
          }
          vstore(scores + h * head_stride + r * padded + t0,
                 vmul(sum_lanes_of_keys(dot), vbroadcast(scale)));
        }
      }
    }
    return;
  }
#endif
  constexpr int64_t kKeyFloats = V * kLanes;  // one head's part of a key row
  block.resize(nh * kLanes * kKeyFloats);
  for (int64_t t0 = begin; t0 < len; t0 += kLanes) {
    const int64_t m = std::min<int64_t>(kLanes, len - t0);
    for (int64_t j = 0; j < kLanes; ++j) {
      const int64_t t = t0 + j;
      if (t + kPrefetch < len)
        prefetch_row(heads[0].k + heads[0].slots[t + kPrefetch] * heads[0].stride,
                     nh * kKeyFloats);
      for (int64_t h = 0; h < nh; ++h) {
        const KV* row = heads[h].k + heads[h].slots[std::min(t, len - 1)] * heads[h].stride;
        float* dst = block.data() + (h * kLanes + j) * kKeyFloats;
#pragma GCC unroll 16
        for (int i = 0; i < V; ++i)
          vstore(dst + i * kLanes, j < m ? vload(row + i * kLanes) : vzero());
      }
    }
    for (int64_t h = 0; h < nh; ++h) {
      const float* keys = block.data() + h * kLanes * kKeyFloats;
      for (int64_t r = 0; r < rows; ++r) {
        Vec query[V], dot[kLanes];
#pragma GCC unroll 16
        for (int i = 0; i < V; ++i) query[i] = vload(heads[h].q[r] + i * kLanes);
#pragma GCC unroll 16
        for (int j = 0; j < kLanes; ++j) {
          const float* key = keys + j * kKeyFloats;
          dot[j] = vmul(query[0], vload(key));
#pragma GCC unroll 16
          for (int i = 1; i < V; ++i) dot[j] = vfma(query[i], vload(key + i * kLanes), dot[j]);
        }
        vstore(scores + h * head_stride + r * padded + t0,
               vmul(sum_lanes_of_keys(dot), vbroadcast(scale)));
      }
    }
  }
}

// Where values_of's sums over keys [begin, end) start and go: `resume` holds each row's sum
// over the keys before `begin` (nullptr: none, begin is 0), `save` takes its sum so far for a
// later span (nullptr: the span is the row's last, out_r = sum / total_r). Row r's partial sum
// lies at r * V * kLanes; the float32 round trip is exact, so a row's sums get the same bits
// in one span or several.
struct ValueSpan {
  int64_t begin, end;
  const float* resume;
  float* save;
};

// out_r = sum over t < visible[r] of p_r[t] * v_t / total_r, for C rows from `first`, over the
// keys of `span`: each value row is read once for the C rows, C x V accumulators in registers,
// added to in key order. p_r[t] is zero past visible[r] (added as exact zeros), so rows of one
// chunk share the key loop.
template <int C, int V, typename KV>
static inline __attribute__((always_inline)) void values_of(const HeadRows<KV>& h, int64_t first, const float* p, int64_t padded,
                      ValueSpan span, const float* totals, float* const* out) {
  constexpr int64_t kRowFloats = V * kLanes;
  Vec acc[C][V];
  if (span.resume) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
      for (int i = 0; i < V; ++i)
        acc[c][i] = vload(span.resume + (first + c) * kRowFloats + i * kLanes);
  } else {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
      for (int i = 0; i < V; ++i) acc[c][i] = vzero();
  }
  const int64_t begin = span.begin, len = span.end;
  for (int64_t t = begin; t < len; ++t) {
    if (t + kPrefetch < len) prefetch_row(h.v + h.slots[t + kPrefetch] * h.stride, V * kLanes);
    const KV* row = h.v + h.slots[t] * h.stride;
    Vec value[V];
#pragma GCC unroll 16
    for (int i = 0; i < V; ++i) value[i] = vload(row + i * kLanes);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const Vec weight = vbroadcast(p[(first + c) * padded + t]);
#pragma GCC unroll 16
      for (int i = 0; i < V; ++i) acc[c][i] = vfma(weight, value[i], acc[c][i]);
    }
  }
  for (int c = 0; c < C; ++c) {
    if (span.save) {
      for (int i = 0; i < V; ++i)
        vstore(span.save + (first + c) * kRowFloats + i * kLanes, acc[c][i]);
      continue;
    }
    const Vec inverse = vbroadcast(1.f / totals[first + c]);
    for (int i = 0; i < V; ++i) vstore(out[first + c] + i * kLanes, vmul(acc[c][i], inverse));
  }
}

// values_of for n <= C rows (each count its own instantiation).
template <int C, int V, typename KV>
static void values_of_rows(int n, const HeadRows<KV>& h, int64_t first, const float* p,
                           int64_t padded, ValueSpan span, const float* totals,
                           float* const* out) {
  if constexpr (C > 0) {
    if (n == C) return values_of<C, V>(h, first, p, padded, span, totals, out);
    values_of_rows<C - 1, V>(n, h, first, p, padded, span, totals, out);
  }
}

// Rows per values_of call: C x V accumulators, V value vectors and a weight within the
// registers (32 with AVX-512, 16 with AVX2).
template <int V>
constexpr int kChunkRows = kLanes == 16 ? std::clamp((30 - V) / V, 1, 6) : std::clamp(8 / V, 1, 4);

// Per-thread buffers of attend.
struct Scratch {
  std::vector<float> scores, block, totals, partial;
};

// Attention of `nh` consecutive KV heads for an item's `members` (sequences, each with the same
// number of query rows): own[m * nh + h] holds member m's rows of head h (its q, out, K/V
// slots, keys and visible counts). Per head, the rows of all members lie member after member
// (R of them), and `visible` holds their counts. Keys [0, shared) (a multiple of kLanes) are the
// same pool rows for every member, a cached prefix: their scores and value sums are computed
// for all R rows at once (joint[h]: those rows over those keys), each member's own keys after
// them. A row's arithmetic is the same either way (the same key blocks, value sums added in
// key order), so its bits do not depend on what it was batched with.
template <int V, typename KV>
static void attend(const HeadRows<KV>* joint, const HeadRows<KV>* own, int64_t members,
                   int64_t nh, int64_t shared, const int64_t* visible, float scale,
                   Scratch& scratch, float* const* out) {
  const int64_t rows = own[0].rows, all_rows = members * rows;
  int64_t len = 0;
  for (int64_t m = 0; m < members; ++m) len = std::max(len, own[m * nh].len);
  const int64_t padded = len + kLanes;  // room for a last block's store
  const int64_t head_stride = all_rows * padded;
  scratch.scores.resize(nh * head_stride);
  float* scores = scratch.scores.data();
  if (shared > 0) scores_of<V>(joint, nh, scale, padded, head_stride, 0, scores, scratch.block);
  for (int64_t m = 0; m < members; ++m)
    scores_of<V>(own + m * nh, nh, scale, padded, head_stride, shared,
                 scores + m * rows * padded, scratch.block);
  scratch.totals.resize(nh * all_rows);
  float* totals = scratch.totals.data();
  for (int64_t i = 0; i < nh * all_rows; ++i) {  // softmax, kept unnormalised until the end
    float* s = scores + i * padded;
    const int64_t r = i % all_rows;
    totals[i] = exp_in_place(s, visible[r], max_of(s, visible[r]));
    std::fill(s + visible[r], s + len, 0.f);
  }
  constexpr int C = kChunkRows<V>;
  constexpr int64_t kRowFloats = V * kLanes;
  float* partial = nullptr;
  if (shared > 0) {
    scratch.partial.resize(nh * all_rows * kRowFloats);
    partial = scratch.partial.data();
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t r = 0; r < all_rows; r += C)
        values_of_rows<C, V>((int)std::min<int64_t>(C, all_rows - r), joint[h], r,
                             scores + h * head_stride, padded,
                             {0, shared, nullptr, partial + h * all_rows * kRowFloats},
                             totals + h * all_rows, out + h * all_rows);
  }
  for (int64_t m = 0; m < members; ++m)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t first = h * all_rows + m * rows;  // the member's first row of this head
      const float* resume = partial ? partial + first * kRowFloats : nullptr;
      for (int64_t r = 0; r < rows; r += C) {
        const int n = (int)std::min<int64_t>(C, rows - r);
        const float* p = scores + h * head_stride + m * rows * padded;
        values_of_rows<C, V>(n, own[m * nh + h], r, p, padded,
                             {shared, visible[m * rows + r + n - 1], resume, nullptr},
                             totals + first, out + first);
      }
    }
}

// One work item: the `num_tokens` new tokens from `first_token` of each of its member
// sequences (member_seqs[first_member ..]), against KV heads [first_head, end_head), with every
// query head of their groups; their first `shared` keys are the same pool rows.
struct Item {
  int64_t first_member, num_members, shared, first_head, end_head, first_token, num_tokens, cost;
};

constexpr int64_t kTokensPerItem = 8;  // new tokens of one sequence that share each K/V read
constexpr int64_t kMinShared = 64;     // keys decode rows must share to be attended together
constexpr int64_t kMaxSharing = 8;     // decode rows per shared item (24 query rows at GQA 3)

// Decode rows (one new token) whose sequences start with the same pool slots: the radix cache
// gives requests with a common prefix the same slots. Per run of sequences with the same first
// slot, each one's keys in common with the run's first (whole kLanes blocks, its own new token
// never shared), most first, cut into groups of up to kMaxSharing that share at least
// kMinShared keys: (keys the group shares, its sequences).
static std::vector<std::pair<int64_t, std::vector<int64_t>>> sharing_groups(
    const int64_t* slots, const int64_t* seq_lens, const int64_t* extend_lens,
    const int64_t* skip_rows, int64_t batch, int64_t max_len) {
  std::vector<int64_t> decode;
  for (int64_t b = 0; b < batch; ++b)
    if (extend_lens[b] == 1 && skip_rows[b] == 0 && seq_lens[b] > kMinShared) decode.push_back(b);
  std::stable_sort(decode.begin(), decode.end(), [&](int64_t a, int64_t b) {
    return slots[a * max_len] < slots[b * max_len];
  });
  std::vector<std::pair<int64_t, std::vector<int64_t>>> groups;
  for (size_t begin = 0, end; begin < decode.size(); begin = end) {
    const int64_t lead = decode[begin];
    const int64_t* lead_slots = slots + lead * max_len;
    for (end = begin + 1; end < decode.size() && slots[decode[end] * max_len] == lead_slots[0];)
      ++end;
    if (end - begin < 2) continue;
    std::vector<std::pair<int64_t, int64_t>> common;  // (keys shared with lead, sequence)
    for (size_t i = begin; i < end; ++i) {
      const int64_t b = decode[i];
      const int64_t* own = slots + b * max_len;
      const int64_t n = std::min(seq_lens[lead], seq_lens[b]) - 1;
      const int64_t same = std::mismatch(own, own + n, lead_slots).first - own;
      if (same / kLanes * kLanes >= kMinShared) common.push_back({same / kLanes * kLanes, b});
    }
    std::stable_sort(common.begin(), common.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = 0; i + 1 < common.size(); i += kMaxSharing) {
      const size_t stop = std::min(common.size(), i + kMaxSharing);
      std::vector<int64_t> seqs;
      for (size_t j = i; j < stop; ++j) seqs.push_back(common[j].second);
      groups.push_back({common[stop - 1].first, std::move(seqs)});
    }
  }
  return groups;
}

template <int V, typename KV>
static void run(const float* q, int64_t q_stride, const KV* k, const KV* v, const int64_t* slots,
                const int64_t* seq_lens, const int64_t* extend_lens, const int64_t* skip_rows,
                float* out, int64_t batch, int64_t num_heads, int64_t num_kv_heads,
                int64_t head_dim, int64_t max_len, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  std::vector<int64_t> q_start(batch);  // row of q holding sequence b's first new token
  for (int64_t b = 0, row = 0; b < batch; row += extend_lens[b], ++b) q_start[b] = row;
  const auto groups = sharing_groups(slots, seq_lens, extend_lens, skip_rows, batch, max_len);
  std::vector<bool> grouped(batch, false);
  for (const auto& group_seqs : groups)
    for (int64_t b : group_seqs.second) grouped[b] = true;
  int64_t chunks = groups.size();  // items if each covers every KV head
  for (int64_t b = 0; b < batch; ++b)
    if (!grouped[b])
      chunks += (extend_lens[b] - skip_rows[b] + kTokensPerItem - 1) / kTokensPerItem;
  // With too few items for the threads, one KV head each instead of all.
  const int64_t heads_per_item = chunks >= 4 * at::get_num_threads() ? num_kv_heads : 1;
  std::vector<Item> items;
  std::vector<int64_t> member_seqs;
  for (const auto& [shared, seqs] : groups) {
    int64_t len = 0;
    for (int64_t b : seqs) len = std::max(len, seq_lens[b]);
    const int64_t first = member_seqs.size(), n = seqs.size();
    member_seqs.insert(member_seqs.end(), seqs.begin(), seqs.end());
    for (int64_t h = 0; h < num_kv_heads; h += heads_per_item)
      items.push_back({first, n, shared, h, h + heads_per_item, 0, 1, n * len});
  }
  for (int64_t b = 0; b < batch; ++b) {
    if (grouped[b] || skip_rows[b] == extend_lens[b]) continue;
    const int64_t prefix = seq_lens[b] - extend_lens[b], first = member_seqs.size();
    member_seqs.push_back(b);
    for (int64_t t0 = skip_rows[b]; t0 < extend_lens[b]; t0 += kTokensPerItem) {
      const int64_t n = std::min(kTokensPerItem, extend_lens[b] - t0);
      for (int64_t h = 0; h < num_kv_heads; h += heads_per_item)
        items.push_back({first, 1, 0, h, h + heads_per_item, t0, n, n * (prefix + t0 + n)});
    }
  }
  // Costliest first, handed out one at a time: causal items differ in cost by up to the
  // sequence length, so a static split would leave one thread waiting for the other.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.cost > b.cost; });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch scratch;
    std::vector<int64_t> visible;
    std::vector<const float*> q_rows;
    std::vector<float*> out_rows;
    std::vector<HeadRows<KV>> joint, own;
    for (int64_t index = next++; index < static_cast<int64_t>(items.size()); index = next++) {
      const Item& item = items[index];
      const int64_t rows = item.num_tokens * group, all_rows = item.num_members * rows;
      const int64_t nh = item.end_head - item.first_head;
      visible.resize(all_rows);
      q_rows.resize(nh * all_rows);
      out_rows.resize(nh * all_rows);
      joint.clear();
      own.clear();
      for (int64_t m = 0; m < item.num_members; ++m) {
        const int64_t b = member_seqs[item.first_member + m];
        const int64_t prefix = seq_lens[b] - extend_lens[b];
        for (int64_t r = 0; r < rows; ++r)
          visible[m * rows + r] = prefix + item.first_token + r / group + 1;
        for (int64_t h = item.first_head; h < item.end_head; ++h) {
          const int64_t first = (h - item.first_head) * all_rows + m * rows;
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t token = q_start[b] + item.first_token + r / group;
            const int64_t head_offset = (h * group + r % group) * head_dim;
            q_rows[first + r] = q + token * q_stride + head_offset;
            out_rows[first + r] = out + token * num_heads * head_dim + head_offset;
          }
          own.push_back({k + h * head_dim, v + h * head_dim, num_kv_heads * head_dim,
                         slots + b * max_len, prefix + item.first_token + item.num_tokens, rows,
                         q_rows.data() + first, visible.data() + m * rows});
        }
      }
      if (item.shared > 0)
        for (int64_t h = 0; h < nh; ++h) {  // every member's rows over the shared keys
          HeadRows<KV> all = own[h];  // member 0's head h, whose slots start the shared keys
          all.len = item.shared;
          all.rows = all_rows;
          all.q = q_rows.data() + h * all_rows;
          all.visible = visible.data();
          joint.push_back(all);
        }
      attend<V>(joint.data(), own.data(), item.num_members, nh, item.shared, visible.data(),
                scale, scratch, out_rows.data());
    }
  });
}

template <typename KV>
static void run_for_head_dim(const float* q, int64_t q_stride, const KV* k, const KV* v,
                             const int64_t* slots,
                             const int64_t* seq_lens, const int64_t* extend_lens,
                             const int64_t* skip_rows, float* out, int64_t batch,
                             int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                             int64_t max_len, float scale) {
  switch (head_dim / kLanes) {
#define RUN_WITH(V)                                                                        \
  case V:                                                                                  \
    return run<V>(q, q_stride, k, v, slots, seq_lens, extend_lens, skip_rows, out, batch,  \
                  num_heads, num_kv_heads, head_dim, max_len, scale);
    RUN_WITH(1) RUN_WITH(2) RUN_WITH(4) RUN_WITH(8) RUN_WITH(16)
#undef RUN_WITH
  }
  TORCH_CHECK(false, "head_dim must be 16, 32, 64 or 128");
}

torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                              torch::Tensor slots, torch::Tensor seq_lens,
                              torch::Tensor extend_lens, torch::Tensor skip_rows,
                              double scale) {
  // q may be a view of a wider row (the rotated [q | k] of a fused projection): only its
  // heads must be contiguous, which spares a copy of every query each layer.
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.dim() == 3 && q.stride(2) == 1 &&
              q.stride(1) == q.size(2) && q.stride(0) >= q.size(1) * q.size(2));
  TORCH_CHECK(k_buffer.dtype() == v_buffer.dtype() && k_buffer.is_contiguous() &&
              v_buffer.is_contiguous());
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.is_contiguous() && slots.dim() == 2);
  TORCH_CHECK(seq_lens.dtype() == torch::kInt64 && seq_lens.is_contiguous());
  TORCH_CHECK(extend_lens.dtype() == torch::kInt64 && extend_lens.is_contiguous());
  TORCH_CHECK(skip_rows.dtype() == torch::kInt64 && skip_rows.is_contiguous());
  const int64_t batch = slots.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_buffer.size(1);
  TORCH_CHECK(k_buffer.size(2) == head_dim && num_heads % num_kv_heads == 0);
  TORCH_CHECK(head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128,
              "head_dim must be 16, 32, 64 or 128");
  TORCH_CHECK(seq_lens.size(0) == batch && extend_lens.size(0) == batch &&
              skip_rows.size(0) == batch);
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  const int64_t* news = extend_lens.data_ptr<int64_t>();
  const int64_t* skip = skip_rows.data_ptr<int64_t>();
  int64_t num_tokens = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(news[b] >= 1 && news[b] <= lens[b] && lens[b] <= slots.size(1));
    TORCH_CHECK(skip[b] >= 0 && skip[b] <= news[b], "skip_rows must be within extend_lens");
    num_tokens += news[b];
  }
  TORCH_CHECK(q.size(0) == num_tokens, "q must hold every sequence's new tokens");
  auto out = torch::empty({num_tokens, num_heads, head_dim}, q.options());
  if (k_buffer.dtype() == torch::kFloat32) {
    run_for_head_dim(q.data_ptr<float>(), q.stride(0), k_buffer.data_ptr<float>(),
                     v_buffer.data_ptr<float>(), slots.data_ptr<int64_t>(), lens, news, skip,
                     out.data_ptr<float>(), batch, num_heads, num_kv_heads, head_dim,
                     slots.size(1), static_cast<float>(scale));
  } else {
    TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16, "K/V must be float32 or bfloat16");
    run_for_head_dim(q.data_ptr<float>(), q.stride(0), k_buffer.data_ptr<at::BFloat16>(),
                     v_buffer.data_ptr<at::BFloat16>(), slots.data_ptr<int64_t>(), lens, news,
                     skip, out.data_ptr<float>(), batch, num_heads, num_kv_heads, head_dim,
                     slots.size(1), static_cast<float>(scale));
  }
  return out;
}

bool rounds_bf16_queries() { return kBf16DotScores; }
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
        skip_rows: torch.Tensor,
        scale: float,
    ) -> torch.Tensor: ...


def supports_head_dim(head_dim: int) -> bool:
    return head_dim in (16, 32, 64, 128)


def load_cpu_paged_attention() -> CpuPagedAttention | None:
    """The compiled kernel (built on first use, then loaded from the cache), or None if this
    machine cannot build it."""
    module = _load_module()
    return None if module is None else module.paged_attention


def rounds_bf16_queries() -> bool:
    """Whether the kernel, against a bfloat16 pool, rounds queries to bfloat16 for the scores
    (built with AVX512-BF16; head_dim 32, 64 or 128)."""
    module = _load_module()
    return module is not None and module.rounds_bf16_queries()


def _load_module() -> ModuleType | None:
    return load_cpu_extension(
        "radixlm_cpu_paged_attention", _SOURCE, ("paged_attention", "rounds_bf16_queries")
    )
