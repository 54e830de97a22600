"""SIMD building blocks shared by the C++ CPU kernels (pasted into their sources, after
torch/extension.h)."""

# float32 vectors: 16 lanes where the CPU has AVX-512, else 8 (AVX2). bfloat16 is the upper half
# of a float32, so its rows widen by a shift.
VEC_SOURCE = r"""
#include <immintrin.h>

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
static inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline Vec vload(const at::BFloat16* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
static inline Vec vbroadcast(float x) { return _mm512_set1_ps(x); }
static inline Vec vzero() { return _mm512_setzero_ps(); }
static inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
static inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline Vec vload(const at::BFloat16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
static inline Vec vbroadcast(float x) { return _mm256_set1_ps(x); }
static inline Vec vzero() { return _mm256_setzero_ps(); }
static inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
#endif
"""

EXP8_SOURCE = r"""
#include <immintrin.h>

// e^x of 8 floats (exp8), or 16 (exp16, with AVX-512): 2^n * p(r) with r = x - n ln 2 and a
// degree-7 polynomial (Cephes' expf coefficients), within 2 ulp of std::exp; std::exp here is
// scalar. x is clamped to where 2^n stays a normal float: e^x underflows to ~1e-38 and
// overflows to ~2e38, never inf. One body for both widths (P: the intrinsics' prefix), so a
// value gets the same bits from either.
#define RADIXLM_DEFINE_EXP(name, V, VI, P, round_nearest, as_float)                          \
  static inline V name(V x) {                                                                \
    x = P##_min_ps(P##_max_ps(x, P##_set1_ps(-87.3f)), P##_set1_ps(88.3f));                   \
    const V n = round_nearest(P##_mul_ps(x, P##_set1_ps(1.44269504f)),                        \
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                 \
    V r = P##_fnmadd_ps(n, P##_set1_ps(0.693359375f), x);                                     \
    r = P##_fnmadd_ps(n, P##_set1_ps(-2.12194440e-4f), r);                                    \
    V p = P##_set1_ps(1.9875691500e-4f);                                                      \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.3981999507e-3f));                                    \
    p = P##_fmadd_ps(p, r, P##_set1_ps(8.3334519073e-3f));                                    \
    p = P##_fmadd_ps(p, r, P##_set1_ps(4.1665795894e-2f));                                    \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.6666665459e-1f));                                    \
    p = P##_fmadd_ps(p, r, P##_set1_ps(5.0000001201e-1f));                                    \
    p = P##_fmadd_ps(p, P##_mul_ps(r, r), P##_add_ps(r, P##_set1_ps(1.f)));                   \
    const VI two_n =                                                                         \
        P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23);           \
    return P##_mul_ps(p, as_float(two_n));                                                    \
  }
RADIXLM_DEFINE_EXP(exp8, __m256, __m256i, _mm256, _mm256_round_ps, _mm256_castsi256_ps)
#if defined(__AVX512F__)
RADIXLM_DEFINE_EXP(exp16, __m512, __m512i, _mm512, _mm512_roundscale_ps, _mm512_castsi512_ps)
#endif
#undef RADIXLM_DEFINE_EXP

// silu(gate) * up for 8 (silu_mul8) or 16 (silu_mul16, with AVX-512) float32 values: SwiGLU's
// gate, one definition for every kernel that applies it, so they agree to the bit.
#define RADIXLM_DEFINE_SILU_MUL(name, V, P, exp)                                              \
  static inline V name(V g, V up) {                                                          \
    const V e = exp(P##_sub_ps(P##_setzero_ps(), g));                                         \
    return P##_mul_ps(P##_div_ps(g, P##_add_ps(P##_set1_ps(1.f), e)), up);                    \
  }
RADIXLM_DEFINE_SILU_MUL(silu_mul8, __m256, _mm256, exp8)
#if defined(__AVX512F__)
RADIXLM_DEFINE_SILU_MUL(silu_mul16, __m512, _mm512, exp16)
#endif
#undef RADIXLM_DEFINE_SILU_MUL
"""

# float32 -> bfloat16 as torch rounds (c10: to nearest even, denormals kept), one definition for
# every kernel that converts (activations for the AMX tiles and the dot products, K/V rows into
# the pool). The AVX512-BF16 instruction rounds the same way but flushes denormals: a 32-value
# block holding one goes value by value (they are rare). A NaN stays a NaN (its payload may differ).
BF16_SOURCE = r"""
#include <immintrin.h>

static inline void to_bf16_values(const float* src, at::BFloat16* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  const __m512 smallest_normal = _mm512_set1_ps(1.17549435e-38f);
  const auto denormals = [&](__m512 x) {
    return _mm512_cmp_ps_mask(_mm512_abs_ps(x), smallest_normal, _CMP_LT_OQ) &
           _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  };
  for (; i + 32 <= n; i += 32) {
    const __m512 low = _mm512_loadu_ps(src + i), high = _mm512_loadu_ps(src + i + 16);
    if (denormals(low) | denormals(high)) {
      for (int j = 0; j < 32; ++j) dst[i + j] = at::BFloat16(src[i + j]);
      continue;
    }
    _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(high, low));
  }
#endif
  for (; i < n; ++i) dst[i] = at::BFloat16(src[i]);
}
"""

# The loop of the register-tile matmuls (cpu_dense_matmul.py, cpu_bf16_matmul.py) over their
# weight panels: ``tile(std::integral_constant<int, R>{}, first_row, panel, columns)`` for every
# tile of R <= kMaxRows rows of every panel, torch's threads splitting the panels. Rows go in
# chunks of ``row_chunk`` whose inputs stay in L2 while the panels stream.
PANEL_TILES_SOURCE = r"""
#include <ATen/Parallel.h>
#include <type_traits>

template <int R, typename Tile>
static inline void tile_of_height(int rows, const Tile& tile, int64_t row, int64_t panel,
                                  int columns) {
  if constexpr (R > 0) {
    if (rows == R) return tile(std::integral_constant<int, R>{}, row, panel, columns);
    tile_of_height<R - 1>(rows, tile, row, panel, columns);
  }
}

template <int kMaxRows, typename Tile>
static void for_each_panel_tile(int64_t rows, int64_t panels, int64_t panel_width,
                                int64_t n_total, int64_t row_chunk, const Tile& tile) {
  for (int64_t r0 = 0; r0 < rows; r0 += row_chunk) {
    const int64_t r1 = std::min(rows, r0 + row_chunk);
    at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int columns = (int)std::min<int64_t>(panel_width, n_total - p * panel_width);
        for (int64_t r = r0; r < r1; r += kMaxRows)
          tile_of_height<kMaxRows>((int)std::min<int64_t>(kMaxRows, r1 - r), tile, r, p, columns);
      }
    });
  }
}
"""

# /proc/cpuinfo's names of what AMX_SOURCE needs (load_cpu_extension's cpu_flags).
AMX_CPU_FLAGS = ("amx_tile", "amx_bf16")

# Intel AMX tiles: the configuration block, and the permission Linux grants a process on request.
AMX_SOURCE = r"""
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__AMX_TILE__) || !defined(__AMX_BF16__)
#error "AMX kernels need AMX-TILE and AMX-BF16"
#endif

constexpr int kTileRows = 16, kTileBytes = 64;  // 16 floats, or 32 bfloat16

struct TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Linux hands out the 8 KB tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
static bool amx_permitted() {
  static const bool granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return granted;
}

bool amx_available() { return amx_permitted(); }
"""
