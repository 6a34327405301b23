/* The AVX2 micro-kernels (bd_isa.h): AVX2 + FMA + POPCNT, 4 x 64-bit or 8 x 32-bit lanes.
 * Compiled only when bd_isa.h selects BD_ISA_AVX2.
 *
 * Binary GEMM: AVX2 has no vector popcount, so a word's bits are counted with a nibble
 * table (vpshufb looks up the count of each 4-bit half of every byte), and the table is
 * used as little as possible: the XOR words of one accumulator are first added as bits
 * in carry-save form (Harley-Seal: `ones` and `twos` hold the bits of weight 1 and 2,
 * every 4 words give one word of weight 4 whose bytes are counted by the table into a
 * byte accumulator). That is 25 vector instructions per 4 words of 4 channels instead of
 * 32 with the table alone. The filters come transposed ([K][M], BD_ISA_BGEMM_TRANSPOSED),
 * so each 64-bit lane holds one channel's count and no horizontal sum is needed.
 */
#include "bd_isa.h"

#if defined(BD_ISA_AVX2)
#include <immintrin.h>

#define BD_PCOLS 32  /* channels whose counts are collected before one store to the sink */
#define BD_HS_GROUPS 31 /* weight-4 words per byte accumulator: 31 * 8 <= 255, no byte overflows */

static int imin(int a, int b) { return a < b ? a : b; }

/* Popcount of every byte of v (0..8) by the nibble table. */
static inline __m256i byte_counts(__m256i v)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                           2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

/* Sum of each 64-bit lane's bytes. */
static inline __m256i lane_sums(__m256i bytes) { return _mm256_sad_epu8(bytes, _mm256_setzero_si256()); }

/* Carry-save adder: (high, low) = the 2-bit sums a + b + c of every bit position. */
#define BD_CSA(high, low, a, b, c)                                                              \
    do {                                                                                        \
        const __m256i u_ = _mm256_xor_si256(a, b);                                              \
        high = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u_, c));                \
        low = _mm256_xor_si256(u_, c);                                                          \
    } while (0)

/* Carry-save state of one accumulator: count = 4 * sum(quads) + 2 * pc(twos) + pc(ones),
 * quads the byte counts of the weight-4 words (sum64 after each block of groups). */
typedef struct {
    __m256i ones, twos, quads, sum64;
} hs_acc;

static inline void hs_zero(hs_acc *s)
{
    s->ones = s->twos = s->quads = s->sum64 = _mm256_setzero_si256();
}

/* Four words of one accumulator (x0..x3, already XORed) into its state. */
static inline void hs_add4(hs_acc *s, __m256i x0, __m256i x1, __m256i x2, __m256i x3)
{
    __m256i ta, tb, four;
    BD_CSA(ta, s->ones, s->ones, x0, x1);
    BD_CSA(tb, s->ones, s->ones, x2, x3);
    BD_CSA(four, s->twos, s->twos, ta, tb);
    s->quads = _mm256_add_epi8(s->quads, byte_counts(four));
}

/* The 4 lane counts of a state. */
static inline __m256i hs_total(const hs_acc *s)
{
    const __m256i q = _mm256_add_epi64(s->sum64, lane_sums(s->quads));
    const __m256i t = lane_sums(byte_counts(s->twos)), o = lane_sums(byte_counts(s->ones));
    return _mm256_add_epi64(_mm256_add_epi64(_mm256_slli_epi64(q, 2), _mm256_slli_epi64(t, 1)), o);
}

/* The low 32 bits of the 4 lanes, as 4 int32 (counts fit). */
static inline void store_lanes32(int32_t *dst, __m256i v)
{
    const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, idx)));
}

/* Word k of rows a and b against the 4 filter columns at bk: the XOR words. */
#define BD_X(a, bk) _mm256_xor_si256(_mm256_set1_epi64x((long long)(a)), _mm256_loadu_si256((const __m256i *)(bk)))

/* Counts of rows a0, a1 at the 4 channels of column block B (rows of B ldb apart),
 * over K words: two accumulators share every filter load. */
static void counts2x4(const uint64_t *a0, const uint64_t *a1, int K, const uint64_t *B, long ldb, int32_t *c0,
                      int32_t *c1)
{
    hs_acc s0, s1;
    hs_zero(&s0);
    hs_zero(&s1);
    const int full = K / 4 * 4;
    int k = 0, groups = 0;
    for (; k < full; k += 4, B += 4 * ldb) {
        const uint64_t *b0 = B, *b1 = B + ldb, *b2 = B + 2 * ldb, *b3 = B + 3 * ldb;
        hs_add4(&s0, BD_X(a0[k], b0), BD_X(a0[k + 1], b1), BD_X(a0[k + 2], b2), BD_X(a0[k + 3], b3));
        hs_add4(&s1, BD_X(a1[k], b0), BD_X(a1[k + 1], b1), BD_X(a1[k + 2], b2), BD_X(a1[k + 3], b3));
        if (++groups == BD_HS_GROUPS) {
            s0.sum64 = _mm256_add_epi64(s0.sum64, lane_sums(s0.quads));
            s1.sum64 = _mm256_add_epi64(s1.sum64, lane_sums(s1.quads));
            s0.quads = s1.quads = _mm256_setzero_si256();
            groups = 0;
        }
    }
    __m256i t0 = hs_total(&s0), t1 = hs_total(&s1);
    for (; k < K; ++k, B += ldb) { /* the last K % 4 words, counted alone */
        t0 = _mm256_add_epi64(t0, lane_sums(byte_counts(BD_X(a0[k], B))));
        t1 = _mm256_add_epi64(t1, lane_sums(byte_counts(BD_X(a1[k], B))));
    }
    store_lanes32(c0, t0);
    store_lanes32(c1, t1);
}

/* Filters transposed: B_m[k] = B[k * ldb + m], columns zero-padded to BD_BT_PAD, so with
 * m0 a multiple of 4 (the drivers' column chunks are multiples of BD_BT_PAD) a block of 4
 * columns starting below m1 is readable. Rows in pairs; a pair wholly beyond o->rows is
 * not computed. */
void bd_isa_bgemm4(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    int32_t cnt[BD_QUAD][BD_PCOLS];
    for (int mb = m0; mb < m1; mb += BD_PCOLS) {
        const int len = imin(BD_PCOLS, m1 - mb);
        for (int j = 0; j < len; j += 4)
            for (int r = 0; r < o->rows; r += 2)
                counts2x4(A + (long)r * K, A + (long)(r + 1) * K, K, B + mb + j, ldb, cnt[r] + j, cnt[r + 1] + j);
        for (int r = 0; r < o->rows; ++r) bd_bsink_store(o, r, mb - m0, cnt[r], len);
    }
}

/* Horizontal sum of 4 lanes. */
static inline int32_t hsum64(__m256i v)
{
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (int32_t)(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
}

/* count of row a against filter rows b0..b3 (K words each), vectorised along K: 4 words
 * per step, the byte counts widened every BD_HS_GROUPS steps, the K % 4 tail scalar. */
static void counts1x4(const uint64_t *a, const uint64_t *b0, const uint64_t *b1, const uint64_t *b2,
                      const uint64_t *b3, int K, int32_t *out)
{
    const uint64_t *b[4] = {b0, b1, b2, b3};
    __m256i bytes[4], sums[4];
    for (int f = 0; f < 4; ++f) bytes[f] = sums[f] = _mm256_setzero_si256();
    const int full = K / 4 * 4;
    int k = 0, steps = 0;
    for (; k < full; k += 4) {
        const __m256i av = _mm256_loadu_si256((const __m256i *)(a + k));
        for (int f = 0; f < 4; ++f)
            bytes[f] = _mm256_add_epi8(bytes[f], byte_counts(_mm256_xor_si256(
                                                     av, _mm256_loadu_si256((const __m256i *)(b[f] + k)))));
        if (++steps == BD_HS_GROUPS) {
            for (int f = 0; f < 4; ++f) {
                sums[f] = _mm256_add_epi64(sums[f], lane_sums(bytes[f]));
                bytes[f] = _mm256_setzero_si256();
            }
            steps = 0;
        }
    }
    for (int f = 0; f < 4; ++f) {
        int32_t c = hsum64(_mm256_add_epi64(sums[f], lane_sums(bytes[f])));
        for (int t = k; t < K; ++t) c += bd_popcount64(a[t] ^ b[f][t]);
        out[f] = c;
    }
}

/* Few rows, B as rows: each row against 4 filters at a time sharing the row loads. */
void bd_isa_bgemm_few(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    int32_t cnt[BD_PCOLS];
    for (int r = 0; r < o->rows; ++r) {
        const uint64_t *a = A + (long)r * K;
        for (int mb = m0; mb < m1; mb += BD_PCOLS) {
            const int me = imin(m1, mb + BD_PCOLS);
            int m = mb;
            for (; m + 4 <= me; m += 4) {
                const uint64_t *b0 = B + (long)m * ldb;
                counts1x4(a, b0, b0 + ldb, b0 + 2 * ldb, b0 + 3 * ldb, K, cnt + (m - mb));
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

/* out[r * ldo + j] = sum_k A[r * ars + k * aks] * B[k * ldb + j], r < 4, j < 16, in k order:
 * 8 ymm accumulators, FMA (a block of bd_isa_fgemm4 and of the sgemm tile). */
static void fma4x16(int K, const float *A, long ars, long aks, const float *B, long ldb, float *out, long ldo)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int k = 0; k < K; ++k, A += aks, B += ldb) {
        const __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
        __m256 a = _mm256_broadcast_ss(A);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(A + ars);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(A + 2 * ars);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(A + 3 * ars);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
    }
    _mm256_storeu_ps(out, c00);
    _mm256_storeu_ps(out + 8, c01);
    _mm256_storeu_ps(out + ldo, c10);
    _mm256_storeu_ps(out + ldo + 8, c11);
    _mm256_storeu_ps(out + 2 * ldo, c20);
    _mm256_storeu_ps(out + 2 * ldo + 8, c21);
    _mm256_storeu_ps(out + 3 * ldo, c30);
    _mm256_storeu_ps(out + 3 * ldo + 8, c31);
}

/* Four rows x 32 channels as two 4 x 16 blocks. */
void bd_isa_fgemm4(const float *A, int K, const float *Wt, long ldt, float *out)
{
    for (int j0 = 0; j0 < BD_FM; j0 += 16) fma4x16(K, A, K, 1, Wt + j0, ldt, out + j0, BD_FM);
}

/* The 8 x 32 tile as four 4 x 16 blocks (16 ymm would not hold the whole tile). Rows of
 * A past `rows` are readable (packed panels), so every block is computed. */
static void sgemm_acc(int kc, const float *Ap, long ars, long aks, const float *Bp, float *acc)
{
    for (int r0 = 0; r0 < BD_MR; r0 += 4)
        for (int j0 = 0; j0 < BD_NR; j0 += 16)
            fma4x16(kc, Ap + r0 * ars, ars, aks, Bp + j0, BD_NR, acc + r0 * BD_NR + j0, BD_NR);
}

void bd_isa_sgemm_tile(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                       int cols, double alpha, int add)
{
    float acc[BD_MR * BD_NR];
    sgemm_acc(kc, Ap, ars, aks, Bp, acc);
    bd_sgemm_store(acc, C, ldc, rows, cols, alpha, add);
}

/* ---- integer GEMMs: the 8 x 32 tile as four 4 x 16 blocks (no VNNI: Zen 3 and Haswell lack it) ---- */

#define BD_S16_GROUPS 64 /* i8 groups per int16 accumulator: each adds at most 2 * 255, 64 * 510 < 2^15 */

/* Group q of row r of an A panel (A at the block's first row), in every lane. */
static inline __m256i a_group(const unsigned char *A, long ars, long aks, int r, int q)
{
    int32_t v;
    memcpy(&v, A + 4 * (r * ars + q * aks), sizeof v);
    return _mm256_set1_epi32(v);
}

/* c[r][h] += the products of groups q0 .. q1 - 1 of a block (B at its first column; two ymm of
 * 8 columns per group, against each row's group broadcast): i16 by vpmaddwd (2 products per
 * int32 lane) and vpaddd; i8 by vpmaddubsw (u8 x s8, pairs into int16 lanes: |sum| <= 510,
 * no saturation) and vpaddw. */
static inline void block_groups(int q0, int q1, const unsigned char *A, long ars, long aks, const unsigned char *B,
                                int i8, __m256i c[4][2])
{
    for (int q = q0; q < q1; ++q) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(B + 4 * BD_NR * q));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(B + 4 * BD_NR * q + 32));
        for (int r = 0; r < 4; ++r) {
            const __m256i a = a_group(A, ars, aks, r, q);
            if (i8) {
                c[r][0] = _mm256_add_epi16(c[r][0], _mm256_maddubs_epi16(a, b0));
                c[r][1] = _mm256_add_epi16(c[r][1], _mm256_maddubs_epi16(a, b1));
            } else {
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(a, b0));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(a, b1));
            }
        }
    }
}

static inline void zero4x2(__m256i c[4][2])
{
    for (int r = 0; r < 4; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
}

/* Row r of a block into out (rows ldo apart): the two int32 vectors (8 columns each), minus
 * 128 * bsum for int8 (bsum set), added to out's when add. */
static inline void put_row(int32_t *o, const int32_t *bsum, int add, __m256i v0, __m256i v1)
{
    if (bsum) {
        v0 = _mm256_sub_epi32(v0, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)bsum), 7));
        v1 = _mm256_sub_epi32(v1, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(bsum + 8)), 7));
    }
    if (add) {
        v0 = _mm256_add_epi32(v0, _mm256_loadu_si256((const __m256i *)o));
        v1 = _mm256_add_epi32(v1, _mm256_loadu_si256((const __m256i *)(o + 8)));
    }
    _mm256_storeu_si256((__m256i *)o, v0);
    _mm256_storeu_si256((__m256i *)(o + 8), v1);
}

/* The int16 block's sums, 8 accumulators. */
static void igemm4x16_i16(int kg, const unsigned char *A, long ars, long aks, const unsigned char *B,
                          const int32_t *bsum, int32_t *out, long ldo, int add)
{
    __m256i c[4][2];
    zero4x2(c);
    block_groups(0, kg, A, ars, aks, B, 0, c);
    for (int r = 0; r < 4; ++r) put_row(out + r * ldo, bsum, add, c[r][0], c[r][1]);
}

/* The same for int8 groups: int16 sums of BD_S16_GROUPS groups at a time, widened by vpmaddwd
 * with ones into int32 sums. */
static void igemm4x16_i8(int kg, const unsigned char *A, long ars, long aks, const unsigned char *B,
                         const int32_t *bsum, int32_t *out, long ldo, int add)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i sums[4][2];
    zero4x2(sums);
    for (int q0 = 0; q0 < kg; q0 += BD_S16_GROUPS) {
        __m256i c[4][2];
        zero4x2(c);
        block_groups(q0, imin(kg, q0 + BD_S16_GROUPS), A, ars, aks, B, 1, c);
        for (int r = 0; r < 4; ++r)
            for (int h = 0; h < 2; ++h) sums[r][h] = _mm256_add_epi32(sums[r][h], _mm256_madd_epi16(c[r][h], ones));
    }
    for (int r = 0; r < 4; ++r) put_row(out + r * ldo, bsum, add, sums[r][0], sums[r][1]);
}

BD_IGEMM_FROM_BLOCKS(igemm4x16_i16, igemm4x16_i8)

/* ---- double GEMMs in k order: 4 rows x 8 columns in 8 ymm of 4 doubles per pass, a
 * multiplication and an addition per step (never fused) ---- */

#define BD_DSTEP(c, a, b) c = _mm256_add_pd(c, _mm256_mul_pd(a, b))

/* Columns j0..j0+7 of the BD_DQ rows: c += a_r(k) * b for k < K, b the 8 columns of step k
 * as two vectors of doubles: B's floats (columns from cols on read as 0) or, when W is
 * set, +-1 from bits j0.. of W's rows (ldw words apart, from bit `bit0`). */
static inline void dgemm_cols8(int K, const float *const a[BD_DQ], long aks, const float *B, long ldb, int cols,
                               const uint64_t *W, long ldw, long bit0, int j0, double *out)
{
    __m256d c[BD_DQ][2];
    for (int r = 0; r < BD_DQ; ++r) c[r][0] = c[r][1] = _mm256_setzero_pd();
    const __m256i lane_bit0 = _mm256_setr_epi64x(1, 2, 4, 8), lane_bit1 = _mm256_setr_epi64x(16, 32, 64, 128);
    const __m256d plus = _mm256_set1_pd(1.0), minus = _mm256_set1_pd(-1.0);
    const int n = imin(8, cols - j0);
    for (int k = 0; k < K; ++k) {
        __m256d b0, b1;
        if (W) {
            const long bit = bit0 + j0;
            const __m256i v = _mm256_set1_epi64x((long long)((W[(long)k * ldw + (bit >> 6)] >> (bit & 63)) & 0xffu));
            b0 = _mm256_blendv_pd(minus, plus, _mm256_castsi256_pd(
                                                   _mm256_cmpeq_epi64(_mm256_and_si256(v, lane_bit0), lane_bit0)));
            b1 = _mm256_blendv_pd(minus, plus, _mm256_castsi256_pd(
                                                   _mm256_cmpeq_epi64(_mm256_and_si256(v, lane_bit1), lane_bit1)));
        } else {
            const float *bk = B + (long)k * ldb + j0;
            __m256 f;
            if (n >= 8) {
                f = _mm256_loadu_ps(bk);
            } else {
                float tmp[8] = {0};
                for (int j = 0; j < n; ++j) tmp[j] = bk[j];
                f = _mm256_loadu_ps(tmp);
            }
            b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
            b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
        }
        for (int r = 0; r < BD_DQ; ++r) {
            const __m256d av = _mm256_set1_pd((double)a[r][(long)k * aks]);
            BD_DSTEP(c[r][0], av, b0);
            BD_DSTEP(c[r][1], av, b1);
        }
    }
    for (int r = 0; r < BD_DQ; ++r) {
        _mm256_storeu_pd(out + r * BD_DN + j0, c[r][0]);
        _mm256_storeu_pd(out + r * BD_DN + j0 + 4, c[r][1]);
    }
}

void bd_isa_dgemm4_f32(int K, const float *A, long ars, long aks, int rows, const float *B, long ldb, int cols,
                       double *out)
{
    const float *a[BD_DQ];
    bd_dgemm_rows(A, ars, rows, a);
    for (int j0 = 0; j0 < BD_DN; j0 += 8) dgemm_cols8(K, a, aks, B, ldb, cols, NULL, 0, 0, j0, out);
}

void bd_isa_dgemm4_b1(int K, const float *A, long ars, long aks, int rows, const uint64_t *B, long ldw, long j0,
                      double *out)
{
    const float *a[BD_DQ];
    bd_dgemm_rows(A, ars, rows, a);
    for (int j = 0; j < BD_DN; j += 8) dgemm_cols8(K, a, aks, NULL, 0, BD_DN, B, ldw, j0, j, out);
}
#undef BD_DSTEP

/* 8 bits of a threshold word: bit i is le[i] ? x[i] <= t[i] : x[i] >= t[i], i.e. NOT
 * (le ? x > t : t > x) for integers; x and t int32 lanes, lemask all-ones where le. */
static inline unsigned bits8_int(__m256i x, __m256i t, __m256i lemask)
{
    const __m256i gt = _mm256_blendv_epi8(_mm256_cmpgt_epi32(t, x), _mm256_cmpgt_epi32(x, t), lemask);
    return ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) & 0xffu;
}

/* le[0..7] as int32 lanes of all ones (le) or zero. */
static inline __m256i le_mask8(const uint8_t *le)
{
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)le));
    return _mm256_cmpgt_epi32(v, _mm256_setzero_si256());
}

/* 8 channels of x (int8, int16 or int32 at element i) as int32 lanes: exact. */
static inline __m256i load8_int(const void *x, int x_type, long i)
{
    if (x_type == BD_I8) return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)x + i)));
    if (x_type == BD_I16) return _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)((const int16_t *)x + i)));
    return _mm256_loadu_si256((const __m256i *)((const int32_t *)x + i));
}

/* 8 lanes at a time, compared in int32 (exact for every x_type); the tail per channel. */
void bd_isa_threshold_int(const void *x, int x_type, long pixels, int C, const int32_t *t, const uint8_t *le,
                          uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const long xo = p * C + c;
            const int end = imin(C - c, 64);
            int b = 0;
            uint64_t word = 0;
            for (; b + 8 <= end; b += 8) {
                const __m256i tv = _mm256_loadu_si256((const __m256i *)(t + c + b));
                word |= (uint64_t)bits8_int(load8_int(x, x_type, xo + b), tv, le_mask8(le + c + b)) << b;
            }
            *y++ = word | bd_threshold_bits_int(x, x_type, xo, t + c, le + c, b, end);
        }
    }
}

/* 8 lanes per compare (ordered: NaN compares false, as in numpy); the tail per channel. */
void bd_isa_threshold_f32(const float *x, long pixels, int C, const float *t, const uint8_t *le, uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const float *xc = x + p * C + c;
            const int end = imin(C - c, 64);
            int b = 0;
            uint64_t word = 0;
            for (; b + 8 <= end; b += 8) {
                const __m256 v = _mm256_loadu_ps(xc + b), tv = _mm256_loadu_ps(t + c + b);
                const __m256 bit = _mm256_blendv_ps(_mm256_cmp_ps(v, tv, _CMP_GE_OQ), _mm256_cmp_ps(v, tv, _CMP_LE_OQ),
                                                    _mm256_castsi256_ps(le_mask8(le + c + b)));
                word |= (uint64_t)(unsigned)_mm256_movemask_ps(bit) << b;
            }
            *y++ = word | bd_threshold_bits_f32(xc, t + c, le + c, b, end);
        }
    }
}

#undef BD_X
#undef BD_CSA
#endif /* BD_ISA_AVX2 */
