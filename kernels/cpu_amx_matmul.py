"""bfloat16 ``x @ W^T`` on Intel AMX tiles, on weights packed once at load time.

oneDNN's AMX GEMM reaches 360-740 GFLOP/s on the 32-row passes of a CPU decode step (its
brgemm blocks for big M); this kernel is the plain AMX loop for few rows: per pair of 16-output
weight tiles, up to 32 rows of activations in two A tiles and four float32 accumulator tiles,
one ``TDPBF16PS`` per tile pair and 32 inputs. On the default model's linear shapes
(``benchmarks/bench_dense_matmul.py --dtype bfloat16``, Intel Xeon, 2 cores) it ran 1.0-1.5
TFLOP/s at 32 rows, 1.4-3.1x oneDNN (the LM head 1.4x), 2.6-4x at 8 rows and 1.06-1.8x at 512.

A tile computes each output from its own activation row and weight column in a fixed order
over K, and partial row blocks configure shorter tiles instead of padding: a row gets the same
bits alone or in any batch. Products are exact (bfloat16 x bfloat16) and summed in float32.

The ``_silu`` variants finish each 32-output block with SwiGLU's silu(gate) * up on its
gates and ups (``interleave_gate_up``), so a fused gate/up projection writes the MLP's hidden
activations directly: never the (rows, 2 * I) projection, nor the pass over it that the
separate ``silu_and_mul`` makes.

``amx_q4_1_matmul`` reads 4-bit Q4_1 tiles instead (``pack_amx_q4_1``) and dequantizes each
weight tile to bfloat16 (``fma(q, d, m)``, rounded to nearest even) into L1 just before its
tile loads: a quarter of the weight bytes for decode passes, whose bf16 weights stream from
DRAM. ``amx_q4_1_to_bf16`` makes the dense tiles with the same dequantization, so
``amx_matmul`` on them gives the same bits (the copy for passes of many rows, where
dequantizing per 32 rows costs more than it saves: 30 layers' matmuls at 1 row 7.2 vs 8.7 ms,
32 rows 8.9 vs 11.2, 64 rows 16.1 vs 15.2).

Layouts: x (rows, K) float32 or bfloat16, K % 32 == 0; packed (ceil(N / 32) * 2, K / 32, 16,
16, 2) bfloat16 (``pack_amx_weight``: per 16 outputs and 32 inputs, one 1 KB tile in AMX's
pair-interleaved layout, outputs zero-padded to a multiple of 32); out (rows, N) in x's dtype.
The process asks the kernel for AMX state once (``arch_prctl``), as oneDNN does.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_extension import load_cpu_extension
from radixlm.kernels.cpu_quant_matmul import q4_1_values
from radixlm.kernels.cpu_simd import AMX_CPU_FLAGS, AMX_SOURCE, BF16_SOURCE, EXP8_SOURCE

K_BLOCK = 32  # inputs per tile
N_BLOCK = 32  # outputs per pass over K (two weight tiles)

_SOURCE = (
    r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <utility>
"""
    + AMX_SOURCE
    + EXP8_SOURCE
    + BF16_SOURCE
    + r"""

constexpr int64_t kTileElements = kTileRows * kTileBytes / 2;  // bfloat16 per weight tile

// tmm0/1: accumulators of the first row block (outputs 0-15, 16-31), tmm2/3 of the second;
// tmm4/5: the two row blocks' activations; tmm6/7: the two weight tiles.
static void configure(int first_rows, int second_rows) {
  TileConfig config;
  const int rows[8] = {first_rows, first_rows, second_rows, second_rows,
                       first_rows, second_rows, kTileRows, kTileRows};
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = rows[t];
    config.colsb[t] = rows[t] ? kTileBytes : 0;
  }
  _tile_loadconfig(&config);
}

// Accumulates rows [0, 16 * blocks) of `a` times column block c's two weight tiles over all
// of K; `weights(c, k_tile, scratch)` gives the block's two tiles at k_tile.
template <int kBlocks, typename Weights>
static inline void multiply(const at::BFloat16* a, int64_t k_total, int64_t c,
                            const Weights& weights, at::BFloat16* scratch) {
  _tile_zero(0);
  _tile_zero(1);
  if (kBlocks == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < k_total; k += 32) {
    const auto [w0, w1] = weights(c, k / 32, scratch);
    _tile_loadd(4, a + k, k_total * 2);
    _tile_loadd(6, w0, kTileBytes);
    _tile_loadd(7, w1, kTileBytes);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (kBlocks == 2) {
      _tile_loadd(5, a + kTileRows * k_total + k, k_total * 2);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

// Stores `rows` rows of the accumulators of `blocks` row blocks: 32 columns, or `columns` of
// them through a scratch copy at the zero-padded last outputs.
static inline void store(int blocks, int rows, float* out, int64_t n_total, int columns) {
  float scratch[2 * kTileRows][32];
  const bool whole = columns == 32;
  float* dst = whole ? out : &scratch[0][0];
  const int64_t stride = whole ? n_total : 32;
  _tile_stored(0, dst, stride * 4);
  _tile_stored(1, dst + 16, stride * 4);
  if (blocks == 2) {
    _tile_stored(2, dst + kTileRows * stride, stride * 4);
    _tile_stored(3, dst + kTileRows * stride + 16, stride * 4);
  }
  if (whole) return;
  for (int r = 0; r < rows; ++r) std::copy_n(scratch[r], columns, out + r * n_total);
}

// SwiGLU epilogue: a column block's first 16 outputs are gates, its last 16 the matching ups
// (pack_amx_weight(interleave_gate_up(w))); stores silu(gate) * up of `rows` rows, 16 columns.
static inline void store_silu_mul(int blocks, int rows, float* out, int64_t n_out) {
  alignas(64) float scratch[2 * kTileRows][32];
  _tile_stored(0, &scratch[0][0], 32 * 4);
  _tile_stored(1, &scratch[0][16], 32 * 4);
  if (blocks == 2) {
    _tile_stored(2, &scratch[kTileRows][0], 32 * 4);
    _tile_stored(3, &scratch[kTileRows][16], 32 * 4);
  }
  for (int r = 0; r < rows; ++r)
    _mm512_storeu_ps(out + r * n_out,
                     silu_mul16(_mm512_load_ps(&scratch[r][0]), _mm512_load_ps(&scratch[r][16])));
}

// x.to(bfloat16) (to_bf16_values: torch's rounding), without torch's dispatch and thread pool
// for the few rows of a decode pass: ~10 us a call there, four calls a layer.
static torch::Tensor to_bf16(const torch::Tensor& x) {
  constexpr int64_t kSerialElements = 1 << 16;
  auto out = torch::empty(x.sizes(), x.options().dtype(torch::kBFloat16));
  const float* src = x.data_ptr<float>();
  at::BFloat16* dst = out.data_ptr<at::BFloat16>();
  const int64_t n = x.numel();
  if (n <= kSerialElements)
    to_bf16_values(src, dst, n);
  else
    at::parallel_for(0, n / 32, kSerialElements / 32, [&](int64_t b, int64_t e) {
      const int64_t end = e == n / 32 ? n : e * 32;
      to_bf16_values(src + b * 32, dst + b * 32, end - b * 32);
    });
  return out;
}

using TilePair = std::pair<const at::BFloat16*, const at::BFloat16*>;

// out = x @ W^T for W of `column_blocks` blocks of 32 outputs and `k_tiles` tiles of 32 inputs;
// `weights(c, k_tile, scratch)` gives a block's two weight tiles (scratch: 2 tiles of room).
// kSiluMul: W holds interleaved gates and ups, and out (rows, n_total / 2) their silu(g) * up.
template <bool kSiluMul = false, typename Weights>
static torch::Tensor matmul(const torch::Tensor& x, int64_t n_total, int64_t column_blocks,
                            int64_t k_tiles, const Weights& weights) {
  TORCH_CHECK(amx_permitted(), "the kernel may not use AMX tiles here");
  TORCH_CHECK((x.dtype() == torch::kFloat32 || x.dtype() == torch::kBFloat16) && x.dim() == 2,
              "x must be a 2-D float32 or bfloat16 tensor");
  const int64_t rows = x.size(0), k_total = x.size(1);
  TORCH_CHECK(k_total == k_tiles * 32, "input width must match the weight's");
  TORCH_CHECK(n_total > (column_blocks - 1) * 32 && n_total <= column_blocks * 32);
  TORCH_CHECK(!kSiluMul || n_total == column_blocks * 32, "gates and ups fill whole blocks");
  const int64_t n_out = kSiluMul ? n_total / 2 : n_total;
  const auto activations =
      x.dtype() == torch::kBFloat16 ? x.contiguous() : to_bf16(x.contiguous());
  auto out = torch::empty({rows, n_out}, x.options().dtype(torch::kFloat32));
  const at::BFloat16* a = activations.data_ptr<at::BFloat16>();
  float* o = out.data_ptr<float>();
  // Column blocks go to the threads one at a time rather than in halves fixed up front: on a
  // two-core machine the server's other processes (HTTP, detokenizer, a benchmark client) take
  // a core now and then, and with a fixed split the other thread would wait at the barrier
  // for the preempted one's half (c = 32 serving, interleaved pairs: 341 / 365 -> 365 / 397
  // tok/s).
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    alignas(64) at::BFloat16 scratch[2 * kTileElements];
    int configured = -1;  // rows of the tiles as configured: first + 16 * second
    for (int64_t c = next++; c < column_blocks; c = next++) {
      const int columns = (int)std::min<int64_t>(32, n_total - c * 32);
      for (int64_t r = 0; r < rows; r += 2 * kTileRows) {
        const int first = (int)std::min<int64_t>(kTileRows, rows - r);
        const int second = (int)std::clamp<int64_t>(rows - r - kTileRows, 0, kTileRows);
        if (first + 16 * second != configured) {
          configure(first, second);
          configured = first + 16 * second;
        }
        const int blocks = second ? 2 : 1;
        if (second)
          multiply<2>(a + r * k_total, k_total, c, weights, scratch);
        else
          multiply<1>(a + r * k_total, k_total, c, weights, scratch);
        if constexpr (kSiluMul)
          store_silu_mul(blocks, first + second, o + r * n_out + c * 16, n_out);
        else
          store(blocks, first + second, o + r * n_total + c * 32, n_total, columns);
      }
    }
    _tile_release();
  });
  return x.dtype() == torch::kFloat32 ? out : out.to(x.dtype());
}

template <bool kSiluMul>
static torch::Tensor dense_tiles_matmul(const torch::Tensor& x, const torch::Tensor& packed,
                                        int64_t n_total) {
  TORCH_CHECK(packed.dtype() == torch::kBFloat16 && packed.dim() == 5 && packed.is_contiguous(),
              "packed must come from pack_amx_weight");
  const int64_t k_tiles = packed.size(1);
  const at::BFloat16* w = packed.data_ptr<at::BFloat16>();
  return matmul<kSiluMul>(x, n_total, packed.size(0) / 2, k_tiles,
                          [&](int64_t c, int64_t k_tile, at::BFloat16*) {
                            const at::BFloat16* w0 =
                                w + (2 * c * k_tiles + k_tile) * kTileElements;
                            return TilePair{w0, w0 + k_tiles * kTileElements};
                          });
}

torch::Tensor amx_matmul(torch::Tensor x, torch::Tensor packed, int64_t n_total) {
  return dense_tiles_matmul<false>(x, packed, n_total);
}

torch::Tensor amx_matmul_silu(torch::Tensor x, torch::Tensor packed, int64_t n_total) {
  return dense_tiles_matmul<true>(x, packed, n_total);
}

// Q4_1 weight tiles: a tile row's 32 values as 4-bit q, byte i holding value i (low nibble)
// and value i + 16; per tile the d then the m of its 16 outputs (fp16). Value e of a row
// belongs to output e / 2, so output o's d and m fill lanes 2o and 2o + 1.
struct Q4_1Tiles {
  const uint8_t* q;    // (tiles, k_tiles, 16 rows, 16 bytes)
  const at::Half* dm;  // (tiles, k_tiles, 2, 16)
  int64_t k_tiles;

  // Weight tile (t, k_tile) in bfloat16: fma(q, d, m), rounded to nearest even.
  void dequantize(int64_t t, int64_t k_tile, at::BFloat16* dst) const {
    const int64_t tile = t * k_tiles + k_tile;
    const __m512i low_outputs =
        _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i high_outputs = _mm512_add_epi32(low_outputs, _mm512_set1_epi32(8));
    const auto* scales = reinterpret_cast<const __m256i*>(dm + tile * 32);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(scales));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(scales + 1));
    const __m512 d_low = _mm512_permutexvar_ps(low_outputs, d);
    const __m512 d_high = _mm512_permutexvar_ps(high_outputs, d);
    const __m512 m_low = _mm512_permutexvar_ps(low_outputs, m);
    const __m512 m_high = _mm512_permutexvar_ps(high_outputs, m);
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const uint8_t* rows = q + tile * kTileRows * 16;
    for (int r = 0; r < kTileRows; ++r) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + r * 16));
      const __m512 low = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, nibble)));
      const __m512 high = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble)));
      const __m512bh row = _mm512_cvtne2ps_pbh(_mm512_fmadd_ps(high, d_high, m_high),
                                               _mm512_fmadd_ps(low, d_low, m_low));
      _mm512_storeu_si512(dst + r * 32, (__m512i)row);
    }
  }
};

static Q4_1Tiles q4_1_tiles(const torch::Tensor& q, const torch::Tensor& dm) {
  TORCH_CHECK(q.dtype() == torch::kUInt8 && q.dim() == 4 && q.is_contiguous() &&
                  dm.dtype() == torch::kFloat16 && dm.dim() == 4 && dm.is_contiguous() &&
                  q.size(0) % 2 == 0 && dm.size(0) == q.size(0) && dm.size(1) == q.size(1),
              "q and dm must come from pack_amx_q4_1");
  return {q.data_ptr<uint8_t>(), dm.data_ptr<at::Half>(), q.size(1)};
}

// Q4_1 tiles dequantized as the passes reach them (into L1): the same weights as
// amx_q4_1_to_bf16 gives, so the same bits as amx_matmul on those.
template <bool kSiluMul>
static torch::Tensor q4_1_tiles_matmul(const torch::Tensor& x, const torch::Tensor& q,
                                       const torch::Tensor& dm, int64_t n_total) {
  const Q4_1Tiles tiles = q4_1_tiles(q, dm);
  return matmul<kSiluMul>(x, n_total, q.size(0) / 2, tiles.k_tiles,
                          [&](int64_t c, int64_t k_tile, at::BFloat16* scratch) {
                            tiles.dequantize(2 * c, k_tile, scratch);
                            tiles.dequantize(2 * c + 1, k_tile, scratch + kTileElements);
                            return TilePair{scratch, scratch + kTileElements};
                          });
}

torch::Tensor amx_q4_1_matmul(torch::Tensor x, torch::Tensor q, torch::Tensor dm,
                              int64_t n_total) {
  return q4_1_tiles_matmul<false>(x, q, dm, n_total);
}

torch::Tensor amx_q4_1_matmul_silu(torch::Tensor x, torch::Tensor q, torch::Tensor dm,
                                   int64_t n_total) {
  return q4_1_tiles_matmul<true>(x, q, dm, n_total);
}

// Every weight tile of Q4_1 tiles, dequantized: pack_amx_weight's layout.
torch::Tensor amx_q4_1_to_bf16(torch::Tensor q, torch::Tensor dm) {
  const Q4_1Tiles tiles = q4_1_tiles(q, dm);
  auto out = torch::empty({q.size(0), q.size(1), kTileRows, 16, 2},
                          q.options().dtype(torch::kBFloat16));
  at::BFloat16* dst = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, q.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t k_tile = 0; k_tile < tiles.k_tiles; ++k_tile)
        tiles.dequantize(t, k_tile, dst + (t * tiles.k_tiles + k_tile) * kTileElements);
  });
  return out;
}
"""
)


def load_cpu_amx_matmul() -> ModuleType | None:
    """The compiled module (``amx_matmul(x, packed, out_features)``, ``amx_q4_1_matmul(x, q,
    dm, out_features)``, their ``_silu`` twins, ``amx_q4_1_to_bf16(q, dm)``,
    ``amx_available()``), or None where this machine cannot build it (no compiler, or a CPU
    without AMX)."""
    module = load_cpu_extension(
        "radixlm_cpu_amx_matmul",
        _SOURCE,
        (
            "amx_matmul",
            "amx_matmul_silu",
            "amx_q4_1_matmul",
            "amx_q4_1_matmul_silu",
            "amx_q4_1_to_bf16",
            "amx_available",
        ),
        cpu_flags=AMX_CPU_FLAGS,
    )
    if module is None or not module.amx_available():
        return None
    return module


def amx_supports(in_features: int) -> bool:
    return in_features % K_BLOCK == 0


def fuses_silu(out_features: int) -> bool:
    """Whether a fused ``[gate | up]`` weight of this many outputs fits the SwiGLU epilogue."""
    return out_features % N_BLOCK == 0


def interleave_gate_up(weight: torch.Tensor) -> torch.Tensor:
    """A fused ``[gate | up]`` (2 * I, in_features) weight with every 16 gate rows followed by
    their 16 up rows: each 32-output block then holds matching gates and ups, so the ``_silu``
    kernels can finish a block with silu(gate) * up. Row order only: quantized blocks keep
    their values."""
    two_i, in_features = weight.shape
    assert fuses_silu(two_i), two_i
    halves = weight.view(2, two_i // N_BLOCK, N_BLOCK // 2, in_features)
    return halves.transpose(0, 1).reshape(two_i, in_features)


def pack_amx_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out_features, in_features) float -> AMX weight tiles in bfloat16 (see the layouts)."""
    out_features, in_features = weight.shape
    assert amx_supports(in_features), in_features
    padded_out = -(-out_features // N_BLOCK) * N_BLOCK
    tiles = F.pad(weight.detach().to(torch.bfloat16), (0, 0, 0, padded_out - out_features))
    # [out tile, 16 outputs, k tile, 16 input pairs, 2] -> [out tile, k tile, pair, output, 2]
    tiles = tiles.view(padded_out // 16, 16, in_features // K_BLOCK, K_BLOCK // 2, 2)
    return tiles.permute(0, 2, 3, 1, 4).contiguous()


def pack_amx_q4_1(qs: torch.Tensor, dm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_1 blocks (kernels/cpu_quant_matmul.py's layout) -> AMX Q4_1 tiles ``(q, dm)``: each
    tile row's 32 values in 16 bytes (value i in the low nibble, i + 16 in the high one), then
    per tile its 16 outputs' d and m. Outputs zero-padded to a multiple of 32 (d = m = 0)."""
    values = q4_1_values(qs)
    out_features = values.shape[0]
    in_features = values.shape[1]
    assert amx_supports(in_features), in_features
    padded_out = -(-out_features // N_BLOCK) * N_BLOCK
    values = F.pad(values, (0, 0, 0, padded_out - out_features))
    k_tiles = in_features // K_BLOCK
    # [out tile, output, k tile, pair, 2] -> [out tile, k tile, pair (tile row), output, 2]
    tiles = values.view(padded_out // 16, 16, k_tiles, K_BLOCK // 2, 2).permute(0, 2, 3, 1, 4)
    rows = tiles.reshape(padded_out // 16, k_tiles, 16, 32)
    q = (rows[..., :16] | (rows[..., 16:] << 4)).contiguous()
    # (out, k tile, (d, m)) -> (out tile, k tile, (d, m), output)
    scales = F.pad(dm, (0, 0, 0, 0, 0, padded_out - out_features))
    return q, scales.view(padded_out // 16, 16, k_tiles, 2).permute(0, 2, 3, 1).contiguous()
