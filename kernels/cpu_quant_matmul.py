"""Block-quantized matmuls for the few rows of a CPU decode step, in llama.cpp's formats.

A decode step of a small model is a weight stream: reading 4-bit weights instead of float32
ones is most of the speed there is. Weights come in blocks of 32 along the input dim:

  Q4_1  ``w = d * q + m``, ``q`` in 0..15, fp16 ``d`` and ``m`` per block; byte ``j`` of a
        block holds element ``j`` in its low nibble and element ``j + 16`` in its high one.
  Q8_0  ``w = d * q``, ``q`` in -127..127, fp16 ``d`` per block.

The activations are quantized too, per row and block of 32, so a block's dot product is
integer work (AVX2 ``maddubs``) instead of 32 float conversions and FMAs: the kernel then runs
at about the speed the weight bytes stream in. Unlike llama.cpp's single int8 copy (Q8_1), a
block is written as two int8 parts, ``x ~ step * (254 * hi + lo)`` with ``step = absmax / 127 /
254``: a single int8 copy rounds every value of a block holding one of this model's outlier
activations to a few steps (greedy answers changed, e.g. "Paris" was lost), the residual part
brings the error down to ~0.002 % of the block's largest value. This path then agrees with a
float32 GEMM on the same weights (used for passes of many rows) to about bfloat16 precision.
Each output is one row's sum over its blocks in a fixed order, so a row gets the same result in
any batch.
Reference: ``kernels.reference.quantized_matmul_reference``.

Layouts (``N`` outputs, ``K`` inputs, ``K % 32 == 0``):
  x        (rows, K) float32
  Q4_1     qs (N, K / 2) uint8, dm (N, K / 32, 2) float16 (d, m)
  Q8_0     qs (N, K) int8,      d  (N, K / 32) float16
  out      (rows, N) float32
"""

from __future__ import annotations

from types import ModuleType

import torch

from radixlm.kernels.cpu_extension import load_cpu_extension

BLOCK = 32

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstring>
#include <vector>

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "the quantized CPU matmul needs AVX2, FMA and F16C"
#endif

constexpr int64_t kBlock = 32;
constexpr int kMaxRowsAtOnce = 4;  // accumulators held in registers per weight row

// Activations per row and block: x ~ step * (254 * hi + lo), hi and lo int8, and the block's
// float sum (for Q4_1's minimums).
struct QuantizedRows {
  std::vector<int8_t> hi, lo;
  std::vector<float> step, sum;
  int64_t k, blocks;
};

constexpr int kLoSteps = 254;  // |x - hi step| <= hi step / 2 = 127 lo steps

static QuantizedRows quantize_rows(const float* x, int64_t rows, int64_t k) {
  const int64_t blocks = k / kBlock;
  QuantizedRows out{std::vector<int8_t>(rows * k), std::vector<int8_t>(rows * k),
                    std::vector<float>(rows * blocks), std::vector<float>(rows * blocks), k,
                    blocks};
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        const float* src = x + r * k + b * kBlock;
        float amax = 0.f, sum = 0.f;
        for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(src[i])), sum += src[i];
        const float hi_step = amax / 127.f, lo_step = hi_step / kLoSteps;
        for (int64_t i = 0; i < kBlock; ++i) {
          float hi = 0.f, lo = 0.f;
          if (hi_step > 0.f) {
            hi = std::nearbyint(src[i] / hi_step);
            lo = std::nearbyint((src[i] - hi * hi_step) / lo_step);
            lo = std::min(127.f, std::max(-127.f, lo));
          }
          out.hi[r * k + b * kBlock + i] = static_cast<int8_t>(hi);
          out.lo[r * k + b * kBlock + i] = static_cast<int8_t>(lo);
        }
        out.step[r * blocks + b] = lo_step;
        out.sum[r * blocks + b] = sum;
      }
    }
  });
  return out;
}

static inline float half_to_float(uint16_t bits) { return _cvtsh_ss(bits); }

// Sixteen int16 pair sums of a block's 32 products (u8 weights x s8 activations).
static inline __m256i pair_sums(__m256i w_u8, __m256i x_s8) {
  return _mm256_maddubs_epi16(w_u8, x_s8);  // |pair| <= 2 * 127 * 127
}

// Eight partial sums of 254 * hi + lo, as floats (the multiply by 254 rides on madd, in int32).
static inline __m256 combine(__m256i hi_pairs, __m256i lo_pairs) {
  const __m256i hi = _mm256_madd_epi16(hi_pairs, _mm256_set1_epi16(static_cast<int16_t>(kLoSteps)));
  const __m256i lo = _mm256_madd_epi16(lo_pairs, _mm256_set1_epi16(1));
  return _mm256_cvtepi32_ps(_mm256_add_epi32(hi, lo));
}

static inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct Q4_1 {
  const uint8_t* qs;
  const uint16_t* dm;
  int64_t blocks;
  static constexpr bool kHasMin = true;
  // Block b of weight row n: its 32 q as u8 (elements 0..15 low lane, 16..31 high), d and m.
  inline __m256i load(int64_t n, int64_t b, float& d, float& m) const {
    const __m128i packed = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(qs + (n * blocks + b) * (kBlock / 2)));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    d = half_to_float(dm[(n * blocks + b) * 2]);
    m = half_to_float(dm[(n * blocks + b) * 2 + 1]);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
  }
  static inline __m256 dot(__m256i w, __m256i hi, __m256i lo) {
    return combine(pair_sums(w, hi), pair_sums(w, lo));
  }
};

struct Q8_0 {
  const int8_t* qs;
  const uint16_t* d;
  int64_t blocks;
  static constexpr bool kHasMin = false;
  inline __m256i load(int64_t n, int64_t b, float& scale, float& m) const {
    scale = half_to_float(d[n * blocks + b]);
    m = 0.f;
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + (n * blocks + b) * kBlock));
  }
  // maddubs wants unsigned x signed: move w's sign onto x (llama.cpp's trick).
  static inline __m256 dot(__m256i w, __m256i hi, __m256i lo) {
    const __m256i magnitude = _mm256_sign_epi8(w, w);
    return combine(pair_sums(magnitude, _mm256_sign_epi8(hi, w)),
                   pair_sums(magnitude, _mm256_sign_epi8(lo, w)));
  }
};

// Outputs [n_begin, n_end) of rows [r0, r0 + R).
template <typename Format, int R>
static void rows_times_weights(const Format& w, const QuantizedRows& x, int64_t r0,
                               int64_t n_begin, int64_t n_end, int64_t n_total, float* out) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    __m256 acc[R];
    float bias[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), bias[r] = 0.f;
    for (int64_t b = 0; b < w.blocks; ++b) {
      float d, m;
      const __m256i wq = w.load(n, b, d, m);
      for (int r = 0; r < R; ++r) {
        const int64_t row_block = (r0 + r) * x.blocks + b;
        const int8_t* hi = x.hi.data() + (r0 + r) * x.k + b * kBlock;
        const int8_t* lo = x.lo.data() + (r0 + r) * x.k + b * kBlock;
        const __m256 products =
            Format::dot(wq, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo)));
        acc[r] = _mm256_fmadd_ps(products, _mm256_set1_ps(d * x.step[row_block]), acc[r]);
        if (Format::kHasMin) bias[r] += m * x.sum[row_block];
      }
    }
    for (int r = 0; r < R; ++r) out[(r0 + r) * n_total + n] = horizontal_sum(acc[r]) + bias[r];
  }
}

template <typename Format>
static torch::Tensor matmul(const Format& w, const torch::Tensor& x, int64_t n_total) {
  const int64_t rows = x.size(0);
  const QuantizedRows xq = quantize_rows(x.data_ptr<float>(), rows, x.size(1));
  auto out = torch::empty({rows, n_total}, x.options());
  float* o = out.data_ptr<float>();
  // Each weight row is used by every activation row while it sits in L1.
  at::parallel_for(0, n_total, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n0 = begin; n0 < end; n0 += 16) {
      const int64_t n1 = std::min(end, n0 + 16);
      for (int64_t r0 = 0; r0 < rows; r0 += kMaxRowsAtOnce) {
        switch (std::min<int64_t>(kMaxRowsAtOnce, rows - r0)) {
          case 1: rows_times_weights<Format, 1>(w, xq, r0, n0, n1, n_total, o); break;
          case 2: rows_times_weights<Format, 2>(w, xq, r0, n0, n1, n_total, o); break;
          case 3: rows_times_weights<Format, 3>(w, xq, r0, n0, n1, n_total, o); break;
          default: rows_times_weights<Format, 4>(w, xq, r0, n0, n1, n_total, o); break;
        }
      }
    }
  });
  return out;
}

static void check_activations(const torch::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous());
  TORCH_CHECK(x.size(1) == k && k % kBlock == 0, "input width must match the weight's");
}

// out_features is the weight's row count: the signature of every matmul route (dense_cpu.py).
torch::Tensor q4_1_matmul(torch::Tensor x, torch::Tensor qs, torch::Tensor dm,
                          int64_t out_features) {
  TORCH_CHECK(qs.dtype() == torch::kUInt8 && qs.dim() == 2 && qs.is_contiguous());
  TORCH_CHECK(dm.dtype() == torch::kFloat16 && dm.is_contiguous());
  const int64_t n = qs.size(0), k = qs.size(1) * 2;
  TORCH_CHECK(out_features == n, "out_features must be the weight's row count");
  check_activations(x, k);
  TORCH_CHECK(dm.numel() == n * (k / kBlock) * 2);
  const Q4_1 w{qs.data_ptr<uint8_t>(), reinterpret_cast<const uint16_t*>(dm.data_ptr()),
               k / kBlock};
  return matmul(w, x, n);
}

torch::Tensor q8_0_matmul(torch::Tensor x, torch::Tensor qs, torch::Tensor d,
                          int64_t out_features) {
  TORCH_CHECK(qs.dtype() == torch::kInt8 && qs.dim() == 2 && qs.is_contiguous());
  TORCH_CHECK(d.dtype() == torch::kFloat16 && d.is_contiguous());
  const int64_t n = qs.size(0), k = qs.size(1);
  TORCH_CHECK(out_features == n, "out_features must be the weight's row count");
  check_activations(x, k);
  TORCH_CHECK(d.numel() == n * (k / kBlock));
  const Q8_0 w{qs.data_ptr<int8_t>(), reinterpret_cast<const uint16_t*>(d.data_ptr()),
               k / kBlock};
  return matmul(w, x, n);
}
"""


def load_cpu_quant_matmul() -> ModuleType | None:
    """The compiled module (``q4_1_matmul(x, qs, dm, out_features)``,
    ``q8_0_matmul(x, qs, d, out_features)``), or None if
    this machine cannot build it (no compiler, or no AVX2 / FMA / F16C)."""
    return load_cpu_extension("radixlm_cpu_quant_matmul", _SOURCE, ("q4_1_matmul", "q8_0_matmul"))


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    out_features, in_features = weight.shape
    assert in_features % BLOCK == 0, in_features
    return weight.detach().float().reshape(out_features, in_features // BLOCK, BLOCK)


def pack_q4_1(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qs, dm)`` of a float weight: min/max quantization per block. Lossless for a weight
    dequantized from Q4_1 (every block holds its minimum, q = 0, and maximum, q = 15)."""
    blocks = _blocks(weight)
    low = blocks.amin(dim=-1)
    d = ((blocks.amax(dim=-1) - low) / 15).half()
    m = low.half()
    step = d.float().clamp(min=torch.finfo(torch.float32).tiny)[..., None]
    q = ((blocks - m.float()[..., None]) / step).round().clamp(0, 15).to(torch.uint8)
    qs = q[..., : BLOCK // 2] | (q[..., BLOCK // 2 :] << 4)
    return qs.reshape(weight.shape[0], -1).contiguous(), torch.stack((d, m), dim=-1).contiguous()


def pack_q8_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qs, d)`` of a float weight: absmax quantization per block. Lossless for a weight
    dequantized from Q8_0 (the default GGUF's tied embedding)."""
    blocks = _blocks(weight)
    d = (blocks.abs().amax(dim=-1) / 127).half()
    step = d.float().clamp(min=torch.finfo(torch.float32).tiny)[..., None]
    q = (blocks / step).round().clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape).contiguous(), d.contiguous()


def q4_1_values(qs: torch.Tensor) -> torch.Tensor:
    """The 4-bit q of Q4_1 blocks, (N, K) uint8 in 0..15 (blocks unpacked in order)."""
    nibbles = qs.reshape(qs.shape[0], -1, BLOCK // 2)
    return torch.cat((nibbles & 0x0F, nibbles >> 4), dim=-1).reshape(qs.shape[0], -1)


def dequantize_q4_1(qs: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    q = q4_1_values(qs).float().reshape(qs.shape[0], -1, BLOCK)
    d, m = dm.float().unbind(dim=-1)
    return (q * d[..., None] + m[..., None]).reshape(qs.shape[0], -1)


def dequantize_q8_0(qs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    q = qs.reshape(qs.shape[0], -1, BLOCK).float()
    return (q * d.float()[..., None]).reshape(qs.shape)
