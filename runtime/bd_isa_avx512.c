/* The AVX-512 micro-kernels (bd_isa.h): AVX-512F, BW, VL, VPOPCNTDQ and VNNI, 8 x 64-bit or
 * 16 x 32-bit lanes. Compiled only when bd_isa.h selects BD_ISA_AVX512.
 *
 * Binary GEMM: the filters come transposed ([K][M], BD_ISA_BGEMM_TRANSPOSED), so a
 * 4-row x 32-channel register tile accumulates popcnt(xor(broadcast(a), b)) in 16 zmm
 * registers and writes the sink straight from them. See docs/backend.md for the speed.
 */
#include "bd_isa.h"

#if defined(BD_ISA_AVX512)
#include <immintrin.h>

#define BD_ACC(c, a, b) c = _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_xor_si512(a, b)))

#if defined(__GNUC__)
#define BD_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define BD_ALWAYS_INLINE static inline
#endif

#define BD_TO_COUNTS 0 /* sink mode: int32 counts; else the out_type of the pre-activations */

/* The 8 counts of row r, columns j.. (lanes in keep) to the sink, in a mode known when
 * the kernel body is instantiated (so the store is picked at compile time). */
BD_ALWAYS_INLINE void sink8(const bd_bsink *o, int mode, int r, int j, __mmask8 keep, __m512i acc)
{
    if (r >= o->rows) return;
    if (mode == BD_TO_COUNTS) {
        _mm512_mask_cvtepi64_storeu_epi32(o->counts + r * o->ldc + j, keep, acc);
        return;
    }
    const __m512i base = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(keep, o->base + j));
    const __m512i twice = _mm512_slli_epi64(acc, 1);
    const __m512i v = o->k2 < 0 ? _mm512_sub_epi64(base, twice) : _mm512_add_epi64(base, twice);
    if (mode == BD_I8) _mm512_mask_cvtepi64_storeu_epi8((int8_t *)o->y + r * o->ldy + j, keep, v);
    else if (mode == BD_I16) _mm512_mask_cvtepi64_storeu_epi16((int16_t *)o->y + r * o->ldy + j, keep, v);
    else _mm512_mask_cvtepi64_storeu_epi32((int32_t *)o->y + r * o->ldy + j, keep, v);
}

/* B = Bt[k * ldb + m], zero beyond M up to a multiple of BD_BT_PAD; o is a local copy (the
 * stores through y cannot change it). */
BD_ALWAYS_INLINE void bgemm4_body(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1,
                                  const bd_bsink *o, int mode)
{
    const uint64_t *a0 = A, *a1 = A + K, *a2 = A + 2 * K, *a3 = A + 3 * K;
    int mb = m0;
    for (; mb + 32 <= m1; mb += 32) {
        __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
        __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        const uint64_t *b = B + mb;
        for (int k = 0; k < K; ++k, b += ldb) {
            const __m512i b0 = _mm512_loadu_si512((const void *)b);
            const __m512i b1 = _mm512_loadu_si512((const void *)(b + 8));
            const __m512i b2 = _mm512_loadu_si512((const void *)(b + 16));
            const __m512i b3 = _mm512_loadu_si512((const void *)(b + 24));
            __m512i a = _mm512_set1_epi64((long long)a0[k]);
            BD_ACC(c00, a, b0); BD_ACC(c01, a, b1); BD_ACC(c02, a, b2); BD_ACC(c03, a, b3);
            a = _mm512_set1_epi64((long long)a1[k]);
            BD_ACC(c10, a, b0); BD_ACC(c11, a, b1); BD_ACC(c12, a, b2); BD_ACC(c13, a, b3);
            a = _mm512_set1_epi64((long long)a2[k]);
            BD_ACC(c20, a, b0); BD_ACC(c21, a, b1); BD_ACC(c22, a, b2); BD_ACC(c23, a, b3);
            a = _mm512_set1_epi64((long long)a3[k]);
            BD_ACC(c30, a, b0); BD_ACC(c31, a, b1); BD_ACC(c32, a, b2); BD_ACC(c33, a, b3);
        }
        const int j = mb - m0;
        const __mmask8 all = 0xff;
        sink8(o, mode, 0, j, all, c00); sink8(o, mode, 0, j + 8, all, c01);
        sink8(o, mode, 0, j + 16, all, c02); sink8(o, mode, 0, j + 24, all, c03);
        sink8(o, mode, 1, j, all, c10); sink8(o, mode, 1, j + 8, all, c11);
        sink8(o, mode, 1, j + 16, all, c12); sink8(o, mode, 1, j + 24, all, c13);
        sink8(o, mode, 2, j, all, c20); sink8(o, mode, 2, j + 8, all, c21);
        sink8(o, mode, 2, j + 16, all, c22); sink8(o, mode, 2, j + 24, all, c23);
        sink8(o, mode, 3, j, all, c30); sink8(o, mode, 3, j + 8, all, c31);
        sink8(o, mode, 3, j + 16, all, c32); sink8(o, mode, 3, j + 24, all, c33);
    }
    for (; mb < m1; mb += 8) {
        __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
        const uint64_t *b = B + mb;
        for (int k = 0; k < K; ++k, b += ldb) {
            const __m512i bv = _mm512_loadu_si512((const void *)b);
            BD_ACC(c0, _mm512_set1_epi64((long long)a0[k]), bv);
            BD_ACC(c1, _mm512_set1_epi64((long long)a1[k]), bv);
            BD_ACC(c2, _mm512_set1_epi64((long long)a2[k]), bv);
            BD_ACC(c3, _mm512_set1_epi64((long long)a3[k]), bv);
        }
        const int lanes = m1 - mb < 8 ? m1 - mb : 8;
        const __mmask8 keep = (__mmask8)((1u << lanes) - 1u);
        const int j = mb - m0;
        sink8(o, mode, 0, j, keep, c0);
        sink8(o, mode, 1, j, keep, c1);
        sink8(o, mode, 2, j, keep, c2);
        sink8(o, mode, 3, j, keep, c3);
    }
}

void bd_isa_bgemm4(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    const bd_bsink s = *o;
    if (!s.y) bgemm4_body(A, K, B, ldb, m0, m1, &s, BD_TO_COUNTS);
    else if (s.out_type == BD_I8) bgemm4_body(A, K, B, ldb, m0, m1, &s, BD_I8);
    else if (s.out_type == BD_I16) bgemm4_body(A, K, B, ldb, m0, m1, &s, BD_I16);
    else bgemm4_body(A, K, B, ldb, m0, m1, &s, BD_I32);
}

/* Few rows: vectorise along K (masked tail), 4 filters at a time sharing the row loads;
 * the counts of 32 channels are collected, then stored to the sink in one go. */
void bd_isa_bgemm_few(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    const int full = K / 8;
    const __mmask8 tail = (__mmask8)((1u << (K % 8)) - 1u);
    int32_t cnt[32];
    for (int r = 0; r < o->rows; ++r) {
        const uint64_t *a = A + (long)r * K;
        for (int mb = m0; mb < m1; mb += 32) {
            const int me = m1 - mb < 32 ? m1 : mb + 32;
            int m = mb;
            for (; m + 4 <= me; m += 4) {
                const uint64_t *b0 = B + (long)m * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
                __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
                int k = 0;
                for (int v = 0; v < full; ++v, k += 8) {
                    const __m512i av = _mm512_loadu_si512((const void *)(a + k));
                    BD_ACC(c0, av, _mm512_loadu_si512((const void *)(b0 + k)));
                    BD_ACC(c1, av, _mm512_loadu_si512((const void *)(b1 + k)));
                    BD_ACC(c2, av, _mm512_loadu_si512((const void *)(b2 + k)));
                    BD_ACC(c3, av, _mm512_loadu_si512((const void *)(b3 + k)));
                }
                if (tail) {
                    const __m512i av = _mm512_maskz_loadu_epi64(tail, a + k);
                    BD_ACC(c0, av, _mm512_maskz_loadu_epi64(tail, b0 + k));
                    BD_ACC(c1, av, _mm512_maskz_loadu_epi64(tail, b1 + k));
                    BD_ACC(c2, av, _mm512_maskz_loadu_epi64(tail, b2 + k));
                    BD_ACC(c3, av, _mm512_maskz_loadu_epi64(tail, b3 + k));
                }
                cnt[m - mb] = (int32_t)_mm512_reduce_add_epi64(c0);
                cnt[m - mb + 1] = (int32_t)_mm512_reduce_add_epi64(c1);
                cnt[m - mb + 2] = (int32_t)_mm512_reduce_add_epi64(c2);
                cnt[m - mb + 3] = (int32_t)_mm512_reduce_add_epi64(c3);
            }
            for (; m < me; ++m) {
                const uint64_t *b = B + (long)m * ldb;
                int c = 0;
                for (int k = 0; k < K; ++k) c += bd_popcount64(a[k] ^ b[k]);
                cnt[m - mb] = c;
            }
            bd_bsink_store(o, r, mb - m0, cnt, me - mb);
        }
    }
}

/* Four rows x 32 channels: 8 zmm accumulators, fused multiply-adds. */
void bd_isa_fgemm4(const float *A, int K, const float *Wt, long ldt, float *out)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int k = 0; k < K; ++k) {
        const float *b = Wt + (long)k * ldt;
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 a = _mm512_set1_ps(A[k]);
        c00 = _mm512_fmadd_ps(a, b0, c00);
        c01 = _mm512_fmadd_ps(a, b1, c01);
        a = _mm512_set1_ps(A[K + k]);
        c10 = _mm512_fmadd_ps(a, b0, c10);
        c11 = _mm512_fmadd_ps(a, b1, c11);
        a = _mm512_set1_ps(A[2 * K + k]);
        c20 = _mm512_fmadd_ps(a, b0, c20);
        c21 = _mm512_fmadd_ps(a, b1, c21);
        a = _mm512_set1_ps(A[3 * K + k]);
        c30 = _mm512_fmadd_ps(a, b0, c30);
        c31 = _mm512_fmadd_ps(a, b1, c31);
    }
    _mm512_storeu_ps(out, c00);
    _mm512_storeu_ps(out + 16, c01);
    _mm512_storeu_ps(out + 32, c10);
    _mm512_storeu_ps(out + 48, c11);
    _mm512_storeu_ps(out + 64, c20);
    _mm512_storeu_ps(out + 80, c21);
    _mm512_storeu_ps(out + 96, c30);
    _mm512_storeu_ps(out + 112, c31);
}

/* The 8 x 32 tile of packed panels in 16 zmm accumulators (columns 0..15 in c0, 16..31 in c1). */
BD_ALWAYS_INLINE void sgemm_regs(int kc, const float *Ap, long ars, long aks, const float *Bp, __m512 c0[BD_MR],
                                 __m512 c1[BD_MR])
{
    for (int r = 0; r < BD_MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_loadu_ps(Bp + k * BD_NR), b1 = _mm512_loadu_ps(Bp + k * BD_NR + 16);
        const float *a = Ap + k * aks;
        for (int r = 0; r < BD_MR; ++r) {
            const __m512 av = _mm512_set1_ps(a[r * ars]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
}

BD_ALWAYS_INLINE void sgemm_spill(const __m512 c0[BD_MR], const __m512 c1[BD_MR], float *acc)
{
    for (int r = 0; r < BD_MR; ++r) {
        _mm512_storeu_ps(acc + r * BD_NR, c0[r]);
        _mm512_storeu_ps(acc + r * BD_NR + 16, c1[r]);
    }
}

/* 8 rows x 32 columns: 16 zmm accumulators; a full tile with alpha 1 is stored from them. */
void bd_isa_sgemm_tile(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                       int cols, double alpha, int add)
{
    __m512 c0[BD_MR], c1[BD_MR];
    sgemm_regs(kc, Ap, ars, aks, Bp, c0, c1);
    if (alpha == 1.0 && rows == BD_MR && cols == BD_NR) {
        for (int r = 0; r < BD_MR; ++r) {
            float *c = C + r * ldc;
            if (add) {
                _mm512_storeu_ps(c, _mm512_add_ps(_mm512_loadu_ps(c), c0[r]));
                _mm512_storeu_ps(c + 16, _mm512_add_ps(_mm512_loadu_ps(c + 16), c1[r]));
            } else {
                _mm512_storeu_ps(c, c0[r]);
                _mm512_storeu_ps(c + 16, c1[r]);
            }
        }
        return;
    }
    float acc[BD_MR * BD_NR];
    sgemm_spill(c0, c1, acc);
    bd_sgemm_store(acc, C, ldc, rows, cols, alpha, add);
}


/* ---- integer GEMMs: VNNI dot products, 8 rows x 32 columns in 16 zmm of int32 ---- */

/* Group q of row r of an A panel, in every lane (4 bytes: an int16 pair or 4 bytes). */
BD_ALWAYS_INLINE __m512i a_group(const unsigned char *A, long ars, long aks, int r, int q)
{
    int32_t v;
    memcpy(&v, A + 4 * (r * ars + q * aks), sizeof v);
    return _mm512_set1_epi32(v);
}

/* Row r's 32 sums (v0, v1) minus the correction (s0, s1) into o: the columns of m0, m1. */
BD_ALWAYS_INLINE void put_row(int32_t *o, __mmask16 m0, __mmask16 m1, int add, __m512i v0, __m512i v1, __m512i s0,
                              __m512i s1)
{
    v0 = _mm512_sub_epi32(v0, s0);
    v1 = _mm512_sub_epi32(v1, s1);
    if (add) {
        v0 = _mm512_add_epi32(v0, _mm512_maskz_loadu_epi32(m0, o));
        v1 = _mm512_add_epi32(v1, _mm512_maskz_loadu_epi32(m1, o + 16));
    }
    _mm512_mask_storeu_epi32(o, m0, v0);
    _mm512_mask_storeu_epi32(o + 16, m1, v1);
}

/* The 8 x 32 tile: per group, two zmm of B (16 columns x one group each) against each row's
 * group broadcast; i8 with vpdpbusd (4 products u8 x s8 per int32 lane, then - 128 * bsum),
 * i16 with vpdpwssd (2 products s16 x s16 per lane); then the corner, masked, into C. The
 * accumulator arrays stay in this one function (passed to another, they would be kept on the
 * stack). */
BD_ALWAYS_INLINE void igemm_tile(int kg, const unsigned char *A, long ars, long aks, const unsigned char *B,
                                 const int32_t *bsum, int32_t *C, long ldc, int rows, int cols, int add, int i8)
{
    __m512i c0[BD_MR], c1[BD_MR];
    for (int r = 0; r < BD_MR; ++r) {
        c0[r] = _mm512_setzero_si512();
        c1[r] = _mm512_setzero_si512();
    }
    for (int q = 0; q < kg; ++q) {
        const __m512i b0 = _mm512_loadu_si512((const void *)(B + 4 * BD_NR * q));
        const __m512i b1 = _mm512_loadu_si512((const void *)(B + 4 * BD_NR * q + 64));
        for (int r = 0; r < BD_MR; ++r) {
            const __m512i a = a_group(A, ars, aks, r, q);
            if (i8) {
                c0[r] = _mm512_dpbusd_epi32(c0[r], a, b0);
                c1[r] = _mm512_dpbusd_epi32(c1[r], a, b1);
            } else {
                c0[r] = _mm512_dpwssd_epi32(c0[r], a, b0);
                c1[r] = _mm512_dpwssd_epi32(c1[r], a, b1);
            }
        }
    }
    const __m512i s0 = i8 ? _mm512_slli_epi32(_mm512_loadu_si512((const void *)bsum), 7) : _mm512_setzero_si512();
    const __m512i s1 = i8 ? _mm512_slli_epi32(_mm512_loadu_si512((const void *)(bsum + 16)), 7)
                          : _mm512_setzero_si512();
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : (__mmask16)(cols > 16 ? (1u << (cols - 16)) - 1u : 0u);
    for (int r = 0; r < BD_MR; ++r)
        if (r < rows) put_row(C + r * ldc, m0, m1, add, c0[r], c1[r], s0, s1);
}

void bd_isa_igemm_i16(int kg, const void *Ap, long ars, long aks, const void *Bp, int32_t *C, long ldc, int rows,
                      int cols, int add)
{
    igemm_tile(kg, (const unsigned char *)Ap, ars, aks, (const unsigned char *)Bp, NULL, C, ldc, rows, cols, add, 0);
}

void bd_isa_igemm_i8(int kg, const void *Ap, long ars, long aks, const void *Bp, const int32_t *bsum, int32_t *C,
                     long ldc, int rows, int cols, int add)
{
    igemm_tile(kg, (const unsigned char *)Ap, ars, aks, (const unsigned char *)Bp, bsum, C, ldc, rows, cols, add, 1);
}

/* ---- double GEMMs in k order: 4 rows x 32 columns in 16 zmm of 8 doubles; a multiplication
 * and an addition per step (never fused: the runtime is built with -ffp-contract=off) ---- */

/* The 8 floats of lane group q (0..3) of a 32-column row, as doubles. */
BD_ALWAYS_INLINE __m512d widen8(__m512 lo, __m512 hi, int q)
{
    const __m512 v = q < 2 ? lo : hi;
    const __m256 half = (q & 1) ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                                : _mm512_castps512_ps256(v);
    return _mm512_cvtps_pd(half);
}

#define BD_DSTEP(c, a, b) c = _mm512_add_pd(c, _mm512_mul_pd(a, b))

/* acc rows += a_r * b (4 rows, 4 lane groups), then the next step. */
BD_ALWAYS_INLINE void dstep(__m512d c[BD_DQ][4], const float *a[BD_DQ], long ak, const __m512d b[4])
{
    for (int r = 0; r < BD_DQ; ++r) {
        const __m512d av = _mm512_set1_pd((double)a[r][ak]);
        BD_DSTEP(c[r][0], av, b[0]);
        BD_DSTEP(c[r][1], av, b[1]);
        BD_DSTEP(c[r][2], av, b[2]);
        BD_DSTEP(c[r][3], av, b[3]);
    }
}

/* The rows of A (missing rows read row 0 again: computed, never stored) and zero accumulators. */
BD_ALWAYS_INLINE void dstart(const float *A, long ars, int rows, const float *a[BD_DQ], __m512d c[BD_DQ][4])
{
    for (int r = 0; r < BD_DQ; ++r) {
        a[r] = A + (r < rows ? r : 0) * ars;
        for (int q = 0; q < 4; ++q) c[r][q] = _mm512_setzero_pd();
    }
}

BD_ALWAYS_INLINE void dstore(__m512d c[BD_DQ][4], double *out)
{
    for (int r = 0; r < BD_DQ; ++r)
        for (int q = 0; q < 4; ++q) _mm512_storeu_pd(out + r * BD_DN + 8 * q, c[r][q]);
}

void bd_isa_dgemm4_f32(int K, const float *A, long ars, long aks, int rows, const float *B, long ldb, int cols,
                       double *out)
{
    const float *a[BD_DQ];
    __m512d c[BD_DQ][4];
    dstart(A, ars, rows, a, c);
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : (cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1u) : 0);
    for (int k = 0; k < K; ++k) {
        const float *bk = B + (long)k * ldb;
        const __m512 lo = _mm512_maskz_loadu_ps(m0, bk), hi = _mm512_maskz_loadu_ps(m1, bk + 16);
        const __m512d b[4] = {widen8(lo, hi, 0), widen8(lo, hi, 1), widen8(lo, hi, 2), widen8(lo, hi, 3)};
        dstep(c, a, (long)k * aks, b);
    }
    dstore(c, out);
}

void bd_isa_dgemm4_b1(int K, const float *A, long ars, long aks, int rows, const uint64_t *B, long ldw, long j0,
                      double *out)
{
    const float *a[BD_DQ];
    __m512d c[BD_DQ][4];
    dstart(A, ars, rows, a, c);
    const __m512d plus = _mm512_set1_pd(1.0), minus = _mm512_set1_pd(-1.0);
    const long word = j0 >> 6;
    const int shift = (int)(j0 & 63);
    for (int k = 0; k < K; ++k) {
        const uint32_t bits = (uint32_t)(B[(long)k * ldw + word] >> shift);
        const __m512d b[4] = {_mm512_mask_blend_pd((__mmask8)bits, minus, plus),
                              _mm512_mask_blend_pd((__mmask8)(bits >> 8), minus, plus),
                              _mm512_mask_blend_pd((__mmask8)(bits >> 16), minus, plus),
                              _mm512_mask_blend_pd((__mmask8)(bits >> 24), minus, plus)};
        dstep(c, a, (long)k * aks, b);
    }
    dstore(c, out);
}
#undef BD_DSTEP

/* Bits b.. b+15 of a threshold word from 16 compares: ge where le is 0, le where it is 1. */
static inline uint64_t bits16(__mmask16 ge, __mmask16 lq, const uint8_t *le, int b)
{
    const __mmask16 lm = _mm512_cmpneq_epi32_mask(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)le)),
                                                  _mm512_setzero_si512());
    return (uint64_t)(uint16_t)((ge & (__mmask16)~lm) | (lq & lm)) << b;
}

/* 16 lanes of int16 x compared in int32 (exact); int8 and int32 x one channel at a time. */
void bd_isa_threshold_int(const void *x, int x_type, long pixels, int C, const int32_t *t, const uint8_t *le,
                          uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const long xo = p * C + c;
            const int end = C - c < 64 ? C - c : 64;
            int b = 0;
            uint64_t word = 0;
            if (x_type == BD_I16) {
                for (; b + 16 <= end; b += 16) {
                    const __m512i v =
                        _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)((const int16_t *)x + xo + b)));
                    const __m512i tv = _mm512_loadu_si512((const void *)(t + c + b));
                    word |= bits16(_mm512_cmpge_epi32_mask(v, tv), _mm512_cmple_epi32_mask(v, tv), le + c + b, b);
                }
            }
            *y++ = word | bd_threshold_bits_int(x, x_type, xo, t + c, le + c, b, end);
        }
    }
}

void bd_isa_threshold_f32(const float *x, long pixels, int C, const float *t, const uint8_t *le, uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const float *xc = x + p * C + c;
            const int end = C - c < 64 ? C - c : 64;
            int b = 0;
            uint64_t word = 0;
            for (; b + 16 <= end; b += 16) {
                const __m512 v = _mm512_loadu_ps(xc + b);
                const __m512 tv = _mm512_loadu_ps(t + c + b);
                word |= bits16(_mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ), _mm512_cmp_ps_mask(v, tv, _CMP_LE_OQ),
                               le + c + b, b);
            }
            *y++ = word | bd_threshold_bits_f32(xc, t + c, le + c, b, end);
        }
    }
}

#undef BD_ACC
#endif /* BD_ISA_AVX512 */
