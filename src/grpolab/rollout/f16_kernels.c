/* fp16-weight linear layers for decoding on x86-64 CPUs with AVX2, FMA and F16C (grpolab's sampler).
 *
 * y (M x N) = x (M x K, fp32) @ W^T (W: N x K, stored as fp16) + bias, accumulated in fp32.
 *
 * Why this exists: at decode-sized M (the live rows of a batch, 1-64) a linear layer is bound by the bytes of
 * weight it reads, so fp16 weights halve the cost of fp32 ones. fbgemm's fp16 kernel does that too, but packing
 * its layout costs ~14 ns per element (about a second for a 135M model after every optimizer step), and its
 * small-M kernel reaches about half this CPU's FMA rate. Here the weights live in "panels" of 8 output rows,
 * panel p holding W[8p + j][k] at wp[(p * K + k) * 8 + j], so one 16-byte load gives the 8 weights that
 * multiply x[m][k]; re-packing is one pass that converts and transposes 8 x 8 blocks in registers.
 *
 * The micro-kernel computes 4 rows of x against 3 panels (24 outputs) with 12 independent accumulators, enough
 * to keep both FMA pipes busy through the FMA latency. Work is split over panel groups with OpenMP; the library
 * is linked against libgomp, which the dynamic loader resolves to the copy PyTorch has already loaded, so both
 * share one thread pool.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define CVT8(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define MBLOCK 64 /* rows of x per pass over the weights: 64 x K fp32 stays in L2 */

int gl_f16_abi_version(void) { return 1; }

/* Store one accumulator row segment: 8 outputs, or the first n of them (the padded last panel). */
ALWAYS_INLINE void store8(float *y, __m256 c, const float *bias, int n) {
    if (n == 8) {
        _mm256_storeu_ps(y, bias ? _mm256_add_ps(c, _mm256_loadu_ps(bias)) : c);
    } else {
        float t[8];
        _mm256_storeu_ps(t, c);
        for (int q = 0; q < n; q++) y[q] = t[q] + (bias ? bias[q] : 0.f);
    }
}

/* mr (1-4) rows of x times np (1-3) consecutive panels; ncols valid outputs in the last panel (1-8). The 12
 * accumulators are named variables (an array of vectors ends up spilled to the stack by gcc). */
#define FMA_ROW(I, A)                                      \
    if (mr > I) {                                          \
        __m256 a = _mm256_broadcast_ss(x + I * ldx + k);   \
        A##0 = _mm256_fmadd_ps(a, w0, A##0);               \
        if (np > 1) A##1 = _mm256_fmadd_ps(a, w1, A##1);   \
        if (np > 2) A##2 = _mm256_fmadd_ps(a, w2, A##2);   \
    }
#define STORE_ROW(I, A)                                                                      \
    if (mr > I) {                                                                            \
        float *yr = y + I * ldy;                                                             \
        store8(yr, A##0, bias, np == 1 ? ncols_last : 8);                                     \
        if (np > 1) store8(yr + 8, A##1, bias ? bias + 8 : NULL, np == 2 ? ncols_last : 8);   \
        if (np > 2) store8(yr + 16, A##2, bias ? bias + 16 : NULL, ncols_last);              \
    }
ALWAYS_INLINE void micro(const float *x, size_t ldx, const uint16_t *wp, int K, float *y, size_t ldy,
                         const float *bias, const int mr, const int np, int ncols_last) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, b0 = a0, b1 = a0, b2 = a0;
    __m256 c0 = a0, c1 = a0, c2 = a0, d0 = a0, d1 = a0, d2 = a0;
    const uint16_t *p0 = wp, *p1 = wp + (size_t)K * 8, *p2 = wp + (size_t)K * 16;
    for (int k = 0; k < K; k++) {
        __m256 w0 = CVT8(p0 + 8 * (size_t)k);
        __m256 w1 = np > 1 ? CVT8(p1 + 8 * (size_t)k) : w0;
        __m256 w2 = np > 2 ? CVT8(p2 + 8 * (size_t)k) : w0;
        FMA_ROW(0, a) FMA_ROW(1, b) FMA_ROW(2, c) FMA_ROW(3, d)
    }
    STORE_ROW(0, a) STORE_ROW(1, b) STORE_ROW(2, c) STORE_ROW(3, d)
}

#define DISPATCH_NP(MR)                                                                  \
    static void micro_##MR(const float *x, size_t ldx, const uint16_t *wp, int K, float *y, \
                           size_t ldy, const float *bias, int np, int ncols_last) {       \
        if (np == 3) micro(x, ldx, wp, K, y, ldy, bias, MR, 3, ncols_last);               \
        else if (np == 2) micro(x, ldx, wp, K, y, ldy, bias, MR, 2, ncols_last);          \
        else micro(x, ldx, wp, K, y, ldy, bias, MR, 1, ncols_last);                       \
    }
DISPATCH_NP(1)
DISPATCH_NP(2)
DISPATCH_NP(3)
DISPATCH_NP(4)

typedef void (*micro_fn)(const float *, size_t, const uint16_t *, int, float *, size_t, const float *, int, int);
static const micro_fn MICRO[5] = {0, micro_1, micro_2, micro_3, micro_4};

/* y = x W^T + bias. x: M x K row-major fp32; wp: ceil(N/8) panels; bias: N floats or NULL; y: M x N. */
void gl_linear_f16(const float *x, const uint16_t *wp, const float *bias, float *y, int M, int N, int K) {
    const int panels = (N + 7) / 8;
    const int groups = (panels + 2) / 3;
    for (int m0 = 0; m0 < M; m0 += MBLOCK) {
        const int mb = M - m0 < MBLOCK ? M - m0 : MBLOCK;
#pragma omp parallel for schedule(static)
        for (int g = 0; g < groups; g++) {
            const int p = 3 * g;
            const int np = panels - p < 3 ? panels - p : 3;
            const int ncols_last = N - 8 * (p + np - 1) < 8 ? N - 8 * (p + np - 1) : 8;
            const float *b = bias ? bias + 8 * p : NULL;
            /* rows in balanced tiles of at most 4 (5 -> 3 + 2, not 4 + 1: a one-row tile is conversion-bound) */
            const int tiles = (mb + 3) / 4;
            for (int t = 0, i = 0; t < tiles; t++) {
                const int mr = mb / tiles + (t < mb % tiles);
                MICRO[mr](x + (size_t)(m0 + i) * K, (size_t)K, wp + (size_t)p * 8 * K, K,
                          y + (size_t)(m0 + i) * N + 8 * p, (size_t)N, b, np, ncols_last);
                i += mr;
            }
        }
    }
}

/* 8 x 8 transpose of fp32 rows r[0..7] (in place). */
ALWAYS_INLINE void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Write rows [row0, row0 + rows) of the fp16 panel matrix wp (K columns) from fp32 w (rows x K, row-major),
 * rounding to nearest even as torch's .half() does. Rows outside that range are left untouched. */
void gl_pack_f16(const float *w, uint16_t *wp, int rows, int K, int row0) {
    const int first = row0 / 8, last = (row0 + rows - 1) / 8;
#pragma omp parallel for schedule(static)
    for (int p = first; p <= last; p++) {
        uint16_t *dst = wp + (size_t)p * 8 * K;
        const int r_lo = 8 * p, r_hi = 8 * p + 8;
        if (r_lo >= row0 && r_hi <= row0 + rows) { /* a whole panel: 8 x 8 blocks through registers */
            const float *src = w + (size_t)(r_lo - row0) * K;
            int k = 0;
            for (; k + 8 <= K; k += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(src + (size_t)j * K + k);
                transpose8(r);
                for (int j = 0; j < 8; j++)
                    _mm_storeu_si128((__m128i *)(dst + (size_t)(k + j) * 8), _mm256_cvtps_ph(r[j], _MM_FROUND_TO_NEAREST_INT));
            }
            for (; k < K; k++)
                for (int j = 0; j < 8; j++) dst[(size_t)k * 8 + j] = _cvtss_sh(src[(size_t)j * K + k], _MM_FROUND_TO_NEAREST_INT);
        } else { /* a panel shared with another module, or the padded last one */
            for (int r = r_lo; r < r_hi; r++) {
                if (r < row0 || r >= row0 + rows) continue;
                const float *src = w + (size_t)(r - row0) * K;
                for (int k = 0; k < K; k++) dst[(size_t)k * 8 + (r - r_lo)] = _cvtss_sh(src[k], _MM_FROUND_TO_NEAREST_INT);
            }
        }
    }
}
