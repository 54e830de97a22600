"""Attention of prompt tokens over a bfloat16 KV pool on Intel AMX tiles.

``kernels/cpu_paged_attention.py`` computes every row with float32 FMA chains. Prompt tokens
are most of the attention work of a prefill pass (each over all the keys before it, e.g. a
question over a cached 576-token system prompt), and a tile multiply does 16 x 16 x 32
products in one instruction; decode rows read each key once for a few query rows, so they are
bound by memory and stay on the FMA kernel.

The two kernels round differently (here the queries and probabilities are rounded to
bfloat16, as in HF's bfloat16 SDPA), so which tokens go where must not depend on batching:
the caller routes a sequence's *prompt* tokens here (``prompt_rows``: how many of its new
tokens are prompt tokens, always its first ones) and its generated tokens to the FMA kernel.
A prompt token is always a prompt token, whether alone, batched, in any chunk or after a cache
hit, and a generated token recomputed in a chunk (after a retraction, or jump-forward's forced
tokens) gets the FMA kernel's bits as when it was decoded.

A work item is up to 16 query rows ("columns") of one sequence and one KV head: a few tokens x
the head's query heads (16 of them at a time past 16). Per 16 keys, the K rows are one A tile (straight from the pool when
their slots are consecutive, else copied beside each other) and the queries, rounded to
bfloat16, the B tiles: ``scores^T`` (16 keys x 16 columns) summed in float32. The softmax runs
down the keys with the columns in the lanes; the probabilities, rounded to bfloat16 and turned
to rows (a 16 x 16 word transpose per 32 keys), are the A tile of the second product, the value
rows, pair-interleaved per 32 keys, its B tiles. Key blocks start at key 0 and a column reads
only its own query and keys (probabilities past its last key are exact zeros), so a token's
bits do not depend on its chunk or batch. One layer of the default model (9 / 3 heads x 64,
``benchmarks/bench_cpu_attention.py``): 8 x 64 question tokens after 576 cached keys 6.80 ->
2.26 ms (3.0x), a 2 x 256 prefill 1.66 -> 0.77 ms (2.1x); serving ``generated-shared-prefix``
with the radix cache, alternating servers, 1.19x and 1.39x.

Layouts (as kernels/cpu_paged_attention.py): q (tokens, heads, head_dim) float32, heads
contiguous, tokens any stride apart; k_buffer / v_buffer (slots, kv_heads, head_dim) bfloat16;
slots (batch, max_len), seq_lens, extend_lens, prompt_rows (batch,) int64; out (tokens, heads,
head_dim) float32 contiguous, of which only prompt rows are written. head_dim a multiple of 32
up to 256.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_simd import AMX_CPU_FLAGS, AMX_SOURCE, EXP8_SOURCE

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>
"""
    + AMX_SOURCE
    + EXP8_SOURCE
    + r"""
constexpr int kColumns = 16;      // query rows a work item carries (a tile's width in floats)
constexpr int kKeyBlock = 32;     // keys per probability tile (32 bfloat16 a row)
constexpr int kDimTiles = 4;      // 16-dim output tiles per pass over the values
constexpr int kPrefetchKeys = 32; // how far ahead scattered K / V rows are fetched
constexpr int64_t kTileElems = kTileRows * 32;  // bfloat16 in a tile

// Tiles 0-3 accumulate (scores of 16 keys, then 16 output dims each); 4/5 and 6/7 are the A
// and B operands, loaded in turns: tiles are not renamed, so a load into the tile the last
// product reads would wait for that product.
static void configure() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kTileRows;
    config.colsb[t] = kTileBytes;
  }
  _tile_loadconfig(&config);
}

// Tile intrinsics take register numbers as constants: these map a runtime number to them.
static inline void tile_zero(int t) {
  switch (t) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3);
  }
}

static inline void tile_store(int t, void* dst, int64_t stride) {
  switch (t) {
    case 0: _tile_stored(0, dst, stride); break;
    case 1: _tile_stored(1, dst, stride); break;
    case 2: _tile_stored(2, dst, stride); break;
    default: _tile_stored(3, dst, stride);
  }
}

// Tile `odd ? 5 : 4` (A) and `odd ? 7 : 6` (B).
static inline void load_a(bool odd, const void* src, int64_t stride) {
  if (odd) _tile_loadd(5, src, stride);
  else _tile_loadd(4, src, stride);
}

static inline void load_b(bool odd, const void* src, int64_t stride) {
  if (odd) _tile_loadd(7, src, stride);
  else _tile_loadd(6, src, stride);
}

// Accumulator c += A (4 or 5) . B (6 or 7).
static inline void multiply(int c, bool a_odd, bool b_odd) {
#define DP(C, A, B)                          \
  case C * 4 + (A - 4) * 2 + (B - 6):        \
    _tile_dpbf16ps(C, A, B);                 \
    break;
  switch (c * 4 + a_odd * 2 + b_odd) {
    DP(0, 4, 6) DP(0, 4, 7) DP(0, 5, 6) DP(0, 5, 7)
    DP(1, 4, 6) DP(1, 4, 7) DP(1, 5, 6) DP(1, 5, 7)
    DP(2, 4, 6) DP(2, 4, 7) DP(2, 5, 6) DP(2, 5, 7)
    DP(3, 4, 6) DP(3, 4, 7) DP(3, 5, 6) DP(3, 5, 7)
  }
#undef DP
}

// Rows r[0..15] of 16 32-bit words become their columns (r[j] = old word j of every row).
static inline void transpose_words(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  __m512i s[16];  // s[4i + c], 128-bit lane L: rows 4i..4i+3 of column 4L + c
  for (int i = 0; i < 4; ++i) {
    s[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    s[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    s[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    s[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // a 4 x 4 transpose of 128-bit lanes
    const __m512i x0 = _mm512_shuffle_i32x4(s[c], s[4 + c], 0x44);
    const __m512i x1 = _mm512_shuffle_i32x4(s[c], s[4 + c], 0xEE);
    const __m512i y0 = _mm512_shuffle_i32x4(s[8 + c], s[12 + c], 0x44);
    const __m512i y1 = _mm512_shuffle_i32x4(s[8 + c], s[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
  }
}

// Pool rows of keys [from, to) (up to len) that do not follow the row before them, `bytes`
// from element `offset` of each: runs of consecutive slots stream in by the hardware
// prefetchers, the scattered rows decode appends do not.
static inline void prefetch_scattered(const at::BFloat16* pool, int64_t row_elems,
                                      const int64_t* slots, int64_t from, int64_t to,
                                      int64_t len, int64_t offset, int64_t bytes) {
  for (int64_t t = std::max<int64_t>(from, 1); t < std::min(to, len); ++t) {
    if (slots[t] == slots[t - 1] + 1) continue;
    const char* row = reinterpret_cast<const char*>(pool + slots[t] * row_elems + offset);
    for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch(row + i, _MM_HINT_T0);
  }
}

// One work item: tokens [first_token, first_token + num_tokens) of sequence `seq` with query
// heads [first_head, first_head + heads) of KV head `kv_head`'s group (all of it, or 16 at a
// time past 16); columns token-major, then head.
struct Item {
  int64_t seq, kv_head, first_head, heads, first_token, num_tokens, cost;
};

struct Batch {
  const float* q;
  int64_t q_stride;
  const at::BFloat16* k;
  const at::BFloat16* v;
  const int64_t* slots;
  const int64_t* seq_lens;
  const int64_t* extend_lens;
  const int64_t* q_start;  // q's row of each sequence's first new token
  float* out;
  int64_t num_heads, num_kv_heads, head_dim, max_len;
  float scale;
};

// A growable buffer on 64-byte boundaries (a vector's is 16-byte aligned: every 64-byte row
// stored or tile-loaded would straddle two cache lines). Growing drops the contents.
template <typename T>
class Aligned {
 public:
  ~Aligned() { std::free(data_); }
  T* data() { return data_; }
  T* resize(size_t n) {
    if (n > capacity_) {
      std::free(data_);
      data_ = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
      capacity_ = n;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

// Per-thread buffers, grown as items need.
struct Scratch {
  Aligned<float> scores;          // (keys padded to kKeyBlock, 16 columns): scores^T, then p
  Aligned<at::BFloat16> probs;    // (16 columns, keys padded): p rounded, A tiles
  Aligned<at::BFloat16> keys;     // (16 keys, head_dim): gathered K rows
  Aligned<at::BFloat16> queries;  // (head_dim / 32, 16 pairs, 16 columns, 2)
  Aligned<at::BFloat16> values;   // (2 turns, kDimTiles, 16 key pairs, 16 dims, 2)
  alignas(64) float outputs[kColumns * kDimTiles * 16];
};

// q's row and head of the item's column c.
static inline std::pair<int64_t, int64_t> column_query(const Batch& b, const Item& item, int c) {
  const int64_t group = b.num_heads / b.num_kv_heads;
  return {b.q_start[item.seq] + item.first_token + c / item.heads,
          item.kv_head * group + item.first_head + c % item.heads};
}

// Column c's query into the B tiles: tile `part` row p holds dims 32 part + 2p, 2p + 1 of every
// column; unused columns stay zero.
static void load_queries(const Batch& b, const Item& item, int columns, Scratch& s) {
  const int64_t parts = b.head_dim / 32;
  const int64_t elems = parts * kTileElems;
  std::memset(s.queries.resize(elems), 0, elems * 2);
  auto* words = reinterpret_cast<uint32_t*>(s.queries.data());
  for (int c = 0; c < columns; ++c) {
    const auto [token, head] = column_query(b, item, c);
    const float* q = b.q + token * b.q_stride + head * b.head_dim;
    for (int64_t part = 0; part < parts; ++part) {
      alignas(64) uint32_t pairs[16];
      _mm512_store_si512(pairs, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 32 * part + 16),
                                                             _mm512_loadu_ps(q + 32 * part)));
      uint32_t* tile = words + part * kTileRows * 16;
      for (int p = 0; p < 16; ++p) tile[p * 16 + c] = pairs[p];
    }
  }
}

// scores^T[t][c] = q_c . k_t (unscaled) for keys [0, len), 16 keys a tile; blocks take the four
// accumulators in turns, so one block's products need not wait for the last's store.
static void score_keys(const Batch& b, const Item& item, int64_t len, const int64_t* slots,
                       Scratch& s) {
  const int64_t parts = b.head_dim / 32, row_elems = b.num_kv_heads * b.head_dim;
  const int64_t offset = item.kv_head * b.head_dim;
  s.keys.resize(kTileRows * b.head_dim);
  const __m512i steps = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i eight = _mm512_set1_epi64(8);
  for (int64_t t0 = 0, turn = 0; t0 < len; t0 += kTileRows) {
    const int64_t n = std::min<int64_t>(kTileRows, len - t0);
    prefetch_scattered(b.k, row_elems, slots, t0 + kPrefetchKeys, t0 + kPrefetchKeys + kTileRows,
                       len, offset, b.head_dim * 2);
    // Consecutive slots: the pool's rows are the tile, read in place.
    bool consecutive = n == kTileRows;
    if (consecutive) {
      const __m512i first = _mm512_add_epi64(_mm512_set1_epi64(slots[t0]), steps);
      consecutive =
          _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(slots + t0), first) == 0xFF &&
          _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(slots + t0 + 8),
                                  _mm512_add_epi64(first, eight)) == 0xFF;
    }
    const at::BFloat16* base;
    int64_t stride;
    if (consecutive) {
      base = b.k + slots[t0] * row_elems + offset;
      stride = row_elems * 2;
    } else {
      for (int64_t i = 0; i < kTileRows; ++i) {
        at::BFloat16* dst = s.keys.data() + i * b.head_dim;
        if (i < n)
          std::memcpy(dst, b.k + slots[t0 + i] * row_elems + offset, b.head_dim * 2);
        else
          std::memset(dst, 0, b.head_dim * 2);
      }
      base = s.keys.data();
      stride = b.head_dim * 2;
    }
    const int acc = (int)(t0 / kTileRows % 4);
    tile_zero(acc);
    for (int64_t part = 0; part < parts; ++part, turn ^= 1) {
      load_a(turn, base + 32 * part, stride);
      load_b(turn, s.queries.data() + part * kTileElems, kTileBytes);
      multiply(acc, turn, turn);
    }
    tile_store(acc, s.scores.data() + t0 * kColumns, kColumns * 4);
  }
}

// Softmax down the keys, each column over its visible keys: p = e^(scale s - max), zero past
// them (and for unused columns); returns the columns' sums of p.
static __m512 softmax_keys(int64_t len, int64_t padded, const __m512i visible, float scale,
                           float* scores) {
  __m512 peak = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512 scale_v = _mm512_set1_ps(scale);
  for (int64_t t = 0; t < len; ++t) {
    const __mmask16 seen = _mm512_cmpgt_epi32_mask(visible, _mm512_set1_epi32((int)t));
    const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(scores + t * kColumns), scale_v);
    _mm512_storeu_ps(scores + t * kColumns, x);
    peak = _mm512_mask_max_ps(peak, seen, peak, x);
  }
  __m512 total = _mm512_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    const __mmask16 seen = _mm512_cmpgt_epi32_mask(visible, _mm512_set1_epi32((int)t));
    const __m512 p = _mm512_maskz_mov_ps(
        seen, exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + t * kColumns), peak)));
    total = _mm512_add_ps(total, p);
    _mm512_storeu_ps(scores + t * kColumns, p);
  }
  for (int64_t t = len; t < padded; ++t) _mm512_storeu_ps(scores + t * kColumns, _mm512_setzero_ps());
  return total;
}

// p^T (padded keys x 16 columns, float32) -> a bfloat16 row per column, 32 keys a block: each
// key pair's two rows become 16 words (column j: p[j][2i], p[j][2i + 1]), then a transpose.
static void probabilities_as_rows(int64_t padded, const float* p, at::BFloat16* rows) {
  const __m512i interleave = _mm512_set_epi16(
      31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
      23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t t0 = 0; t0 < padded; t0 += kKeyBlock) {
    __m512i words[16];
    for (int i = 0; i < 16; ++i) {
      const float* pair = p + (t0 + 2 * i) * kColumns;
      const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(pair + kColumns),
                                                          _mm512_loadu_ps(pair));
      words[i] = _mm512_permutexvar_epi16(interleave, halves);
    }
    transpose_words(words);
    for (int j = 0; j < kColumns; ++j) _mm512_storeu_si512(rows + j * padded + t0, words[j]);
  }
}

// outputs (16 columns x 16 `tiles` dims from dim0) = p . V over keys [0, padded): per 32 keys
// the value rows, pair-interleaved into B tiles (two staging buffers in turns, so staging the
// next keys never waits for this block's loads), times the probability rows.
static void weigh_values(const Batch& b, const Item& item, int64_t len, int64_t padded,
                         const int64_t* slots, int64_t dim0, int tiles, Scratch& s) {
  const __m512i low_pairs = _mm512_set_epi16(
      47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
      39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i high_pairs = _mm512_add_epi16(low_pairs, _mm512_set1_epi16(16));
  const int64_t row_elems = b.num_kv_heads * b.head_dim;
  const int64_t offset = item.kv_head * b.head_dim + dim0;
  const int64_t turn_elems = kDimTiles * kTileElems;
  s.values.resize(2 * turn_elems);
  for (int t = 0; t < tiles; ++t) tile_zero(t);
  for (int64_t t0 = 0, turn = 0, b_turn = 0; t0 < padded; t0 += kKeyBlock, turn ^= 1) {
    prefetch_scattered(b.v, row_elems, slots, t0 + kPrefetchKeys, t0 + kPrefetchKeys + kKeyBlock,
                       len, offset, tiles * 32);
    at::BFloat16* staged = s.values.data() + turn * turn_elems;
    for (int i = 0; i < 16; ++i) {  // keys t0 + 2i, t0 + 2i + 1: dims interleaved
      const int64_t t = t0 + 2 * i;
      const at::BFloat16* even = t < len ? b.v + slots[t] * row_elems + offset : nullptr;
      const at::BFloat16* odd = t + 1 < len ? b.v + slots[t + 1] * row_elems + offset : nullptr;
      for (int half = 0; half < tiles / 2; ++half) {
        const __m512i e = even ? _mm512_loadu_si512(even + 32 * half) : _mm512_setzero_si512();
        const __m512i o = odd ? _mm512_loadu_si512(odd + 32 * half) : _mm512_setzero_si512();
        at::BFloat16* tile = staged + 2 * half * kTileElems;
        _mm512_storeu_si512(tile + i * 32, _mm512_permutex2var_epi16(e, low_pairs, o));
        _mm512_storeu_si512(tile + kTileElems + i * 32,
                            _mm512_permutex2var_epi16(e, high_pairs, o));
      }
    }
    load_a(turn, s.probs.data() + t0, padded * 2);
    for (int t = 0; t < tiles; ++t, b_turn ^= 1) {
      load_b(b_turn, staged + t * kTileElems, kTileBytes);
      multiply(t, turn, b_turn);
    }
  }
  for (int t = 0; t < tiles; ++t) tile_store(t, s.outputs + t * 16, kDimTiles * 16 * 4);
}

static void attend(const Batch& b, const Item& item, Scratch& s) {
  const int columns = (int)(item.num_tokens * item.heads);
  const int64_t prefix = b.seq_lens[item.seq] - b.extend_lens[item.seq];
  const int64_t len = prefix + item.first_token + item.num_tokens;  // keys the last token sees
  const int64_t padded = (len + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  const int64_t* slots = b.slots + item.seq * b.max_len;
  alignas(64) int32_t visible[kColumns] = {};
  for (int c = 0; c < columns; ++c)
    visible[c] = (int32_t)(prefix + item.first_token + c / item.heads + 1);

  load_queries(b, item, columns, s);
  s.scores.resize(padded * kColumns);
  score_keys(b, item, len, slots, s);
  const __m512 total = softmax_keys(len, padded, _mm512_load_si512(visible), b.scale,
                                    s.scores.data());
  s.probs.resize(kColumns * padded);
  probabilities_as_rows(padded, s.scores.data(), s.probs.data());
  alignas(64) float inverse[kColumns];
  _mm512_store_ps(inverse, _mm512_div_ps(_mm512_set1_ps(1.f), total));

  const int64_t dim_tiles = b.head_dim / 16;
  for (int64_t dim0 = 0; dim0 < b.head_dim; dim0 += 16 * kDimTiles) {
    const int tiles = (int)std::min<int64_t>(kDimTiles, dim_tiles - dim0 / 16);
    weigh_values(b, item, len, padded, slots, dim0, tiles, s);
    for (int c = 0; c < columns; ++c) {
      const auto [token, head] = column_query(b, item, c);
      float* out = b.out + (token * b.num_heads + head) * b.head_dim + dim0;
      const __m512 scale = _mm512_set1_ps(inverse[c]);
      for (int t = 0; t < tiles; ++t)
        _mm512_storeu_ps(out + 16 * t,
                         _mm512_mul_ps(_mm512_loadu_ps(s.outputs + c * kDimTiles * 16 + 16 * t),
                                       scale));
    }
  }
}

void amx_prompt_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                          torch::Tensor slots, torch::Tensor seq_lens, torch::Tensor extend_lens,
                          torch::Tensor prompt_rows, torch::Tensor out, double scale) {
  TORCH_CHECK(amx_permitted(), "the kernel may not use AMX tiles here");
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.dim() == 3 && q.stride(2) == 1 &&
              q.stride(1) == q.size(2) && q.stride(0) >= q.size(1) * q.size(2));
  TORCH_CHECK(out.dtype() == torch::kFloat32 && out.is_contiguous() && out.sizes() == q.sizes(),
              "out must be a contiguous float32 tensor shaped like q");
  TORCH_CHECK(k_buffer.dtype() == torch::kBFloat16 && v_buffer.dtype() == torch::kBFloat16 &&
                  k_buffer.is_contiguous() && v_buffer.is_contiguous(),
              "K/V must be contiguous bfloat16");
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.is_contiguous() && slots.dim() == 2);
  for (const auto& t : {seq_lens, extend_lens, prompt_rows})
    TORCH_CHECK(t.dtype() == torch::kInt64 && t.is_contiguous() && t.size(0) == slots.size(0));
  const int64_t batch = slots.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_buffer.size(1);
  TORCH_CHECK(k_buffer.size(2) == head_dim && num_heads % num_kv_heads == 0);
  TORCH_CHECK(head_dim % 32 == 0 && head_dim <= 256, "head_dim must be a multiple of 32 up to 256");
  const int64_t group = num_heads / num_kv_heads;
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  const int64_t* news = extend_lens.data_ptr<int64_t>();
  const int64_t* prompt = prompt_rows.data_ptr<int64_t>();
  std::vector<int64_t> q_start(batch);
  int64_t num_tokens = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(news[b] >= 1 && news[b] <= lens[b] && lens[b] <= slots.size(1));
    TORCH_CHECK(prompt[b] >= 0 && prompt[b] <= news[b], "prompt_rows must be within extend_lens");
    q_start[b] = num_tokens;
    num_tokens += news[b];
  }
  TORCH_CHECK(q.size(0) == num_tokens, "q must hold every sequence's new tokens");

  const int64_t heads = std::min<int64_t>(group, kColumns), tokens_per_item = kColumns / heads;
  std::vector<Item> items;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t prefix = lens[b] - news[b];
    for (int64_t t0 = 0; t0 < prompt[b]; t0 += tokens_per_item) {
      const int64_t n = std::min(tokens_per_item, prompt[b] - t0);
      for (int64_t h = 0; h < num_kv_heads; ++h)
        for (int64_t first = 0; first < group; first += heads)
          items.push_back({b, h, first, std::min(heads, group - first), t0, n, prefix + t0 + n});
    }
  }
  if (items.empty()) return;
  // Costliest first, handed out one at a time (causal items differ in cost by up to the
  // sequence length).
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const Batch b{q.data_ptr<float>(), q.stride(0), k_buffer.data_ptr<at::BFloat16>(),
                v_buffer.data_ptr<at::BFloat16>(), slots.data_ptr<int64_t>(), lens, news,
                q_start.data(), out.data_ptr<float>(), num_heads, num_kv_heads, head_dim,
                slots.size(1), static_cast<float>(scale)};
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch scratch;
    configure();
    for (int64_t index = next++; index < static_cast<int64_t>(items.size()); index = next++)
      attend(b, items[index], scratch);
    _tile_release();
  });
}
"""
)


# (q, k_buffer, v_buffer, slots, seq_lens, extend_lens, prompt_rows, out, scale): writes the
# prompt rows of out, in place.
CpuAmxPromptAttention = Callable[..., None]


def load_cpu_amx_prompt_attention(
    kv_dtype: torch.dtype, head_dim: int
) -> CpuAmxPromptAttention | None:
    """The compiled kernel for a KV pool of this dtype and head size, or None where it does not
    apply (K/V not bfloat16, head_dim not a multiple of 32 up to 256) or this machine cannot
    build it (no compiler, a CPU without AMX). The attention backend and the compiled decoder
    loop both ask here, so they agree on which tokens it takes."""
    if kv_dtype != torch.bfloat16 or head_dim % 32 or head_dim > 256:
        return None
    module = load_cpu_amx_attention()
    return None if module is None else module.amx_prompt_attention


def load_cpu_amx_attention() -> ModuleType | None:
    """The compiled module (``amx_prompt_attention``), or None where this machine cannot build
    it or has no AMX."""
    module = load_cpu_extension(
        "radixlm_cpu_amx_attention",
        _SOURCE,
        ("amx_prompt_attention", "amx_available"),
        cpu_flags=AMX_CPU_FLAGS,
    )
    return module if module is not None and module.amx_available() else None
