/* The NEON micro-kernels (bd_isa.h): aarch64 Advanced SIMD, 2 x 64-bit or 4 x 32-bit lanes
 * in 32 registers. Compiled only when bd_isa.h selects BD_ISA_NEON.
 *
 * Binary GEMM: CNT counts the bits of every byte, and UADALP (vpadalq_u8) adds the byte
 * counts pairwise into 16-bit lanes, 3 instructions per 2 words. The filters come
 * transposed ([K][M], BD_ISA_BGEMM_TRANSPOSED): a 4-row x 8-channel tile keeps 16
 * accumulators, each 64-bit lane one channel's count (its four 16-bit parts are summed at
 * the end), so no horizontal sum per word is needed.
 */
#include "bd_isa.h"

#if defined(BD_ISA_NEON)
#include <arm_neon.h>

#define BD_PCOLS 32       /* channels whose counts are collected before one store to the sink */
#define BD_U16_STEPS 4095 /* words per 16-bit accumulator: each adds at most 16, 4095 * 16 < 65536 */

static int imin(int a, int b) { return a < b ? a : b; }

/* acc += the byte counts of a ^ b, pairwise into 16-bit lanes. */
static inline uint16x8_t acc_xor(uint16x8_t acc, uint64x2_t a, uint64x2_t b)
{
    return vpadalq_u8(acc, vcntq_u8(vreinterpretq_u8_u64(veorq_u64(a, b))));
}

/* The count of each 64-bit lane: the sum of its four 16-bit parts. */
static inline uint64x2_t lane_counts(uint16x8_t acc) { return vpaddlq_u32(vpaddlq_u16(acc)); }

/* Counts of the 4 rows of A at channels B .. B+7 (transposed filters, rows ldb apart),
 * into cnt[r][j0 ..]: 16 accumulators, the filter words loaded once for the 4 rows. */
static void counts4x8(const uint64_t *A, int K, const uint64_t *B, long ldb, int32_t cnt[BD_QUAD][BD_PCOLS], int j0)
{
    uint64x2_t tot[BD_QUAD][4];
    for (int r = 0; r < BD_QUAD; ++r)
        for (int q = 0; q < 4; ++q) tot[r][q] = vdupq_n_u64(0);
    for (int k0 = 0; k0 < K; k0 += BD_U16_STEPS) {
        const int k1 = imin(K, k0 + BD_U16_STEPS);
        uint16x8_t c[BD_QUAD][4];
        for (int r = 0; r < BD_QUAD; ++r)
            for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_u16(0);
        const uint64_t *b = B + (long)k0 * ldb;
        for (int k = k0; k < k1; ++k, b += ldb) {
            const uint64x2_t b0 = vld1q_u64(b), b1 = vld1q_u64(b + 2), b2 = vld1q_u64(b + 4), b3 = vld1q_u64(b + 6);
            for (int r = 0; r < BD_QUAD; ++r) {
                const uint64x2_t a = vdupq_n_u64(A[(long)r * K + k]);
                c[r][0] = acc_xor(c[r][0], a, b0);
                c[r][1] = acc_xor(c[r][1], a, b1);
                c[r][2] = acc_xor(c[r][2], a, b2);
                c[r][3] = acc_xor(c[r][3], a, b3);
            }
        }
        for (int r = 0; r < BD_QUAD; ++r)
            for (int q = 0; q < 4; ++q) tot[r][q] = vaddq_u64(tot[r][q], lane_counts(c[r][q]));
    }
    for (int r = 0; r < BD_QUAD; ++r)
        for (int q = 0; q < 4; ++q) vst1_s32(cnt[r] + j0 + 2 * q, vreinterpret_s32_u32(vmovn_u64(tot[r][q])));
}

/* Filters transposed, columns zero-padded to BD_BT_PAD (= 8): every 8-column block that
 * starts below m1 is readable (m0 is a multiple of 8 in every driver). */
void bd_isa_bgemm4(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    int32_t cnt[BD_QUAD][BD_PCOLS];
    for (int mb = m0; mb < m1; mb += BD_PCOLS) {
        const int len = imin(BD_PCOLS, m1 - mb);
        for (int j = 0; j < len; j += 8) counts4x8(A, K, B + mb + j, ldb, cnt, j);
        for (int r = 0; r < o->rows; ++r) bd_bsink_store(o, r, mb - m0, cnt[r], len);
    }
}

/* count of row a against filter rows b[0..3] (K words each), 2 words per step, the odd
 * last word alone. */
static void counts1x4(const uint64_t *a, const uint64_t *const b[4], int K, int32_t *out)
{
    uint64x2_t tot[4];
    for (int f = 0; f < 4; ++f) tot[f] = vdupq_n_u64(0);
    const int full = K / 2 * 2;
    for (int k0 = 0; k0 < full; k0 += 2 * BD_U16_STEPS) {
        const int k1 = imin(full, k0 + 2 * BD_U16_STEPS);
        uint16x8_t c[4];
        for (int f = 0; f < 4; ++f) c[f] = vdupq_n_u16(0);
        for (int k = k0; k < k1; k += 2) {
            const uint64x2_t av = vld1q_u64(a + k);
            for (int f = 0; f < 4; ++f) c[f] = acc_xor(c[f], av, vld1q_u64(b[f] + k));
        }
        for (int f = 0; f < 4; ++f) tot[f] = vaddq_u64(tot[f], lane_counts(c[f]));
    }
    for (int f = 0; f < 4; ++f) {
        int32_t v = (int32_t)vaddvq_u64(tot[f]);
        if (full < K) v += bd_popcount64(a[full] ^ b[f][full]);
        out[f] = v;
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
                const uint64_t *const b[4] = {B + (long)m * ldb, B + (long)(m + 1) * ldb, B + (long)(m + 2) * ldb,
                                              B + (long)(m + 3) * ldb};
                counts1x4(a, b, K, cnt + (m - mb));
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
 * 16 accumulators, vfmaq (a block of bd_isa_fgemm4 and of the sgemm tile). */
static void fma4x16(int K, const float *A, long ars, long aks, const float *B, long ldb, float *out, long ldo)
{
    float32x4_t c[4][4];
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_f32(0.0f);
    for (int k = 0; k < K; ++k, A += aks, B += ldb) {
        const float32x4_t b0 = vld1q_f32(B), b1 = vld1q_f32(B + 4), b2 = vld1q_f32(B + 8), b3 = vld1q_f32(B + 12);
        for (int r = 0; r < 4; ++r) {
            const float32x4_t a = vdupq_n_f32(A[r * ars]);
            c[r][0] = vfmaq_f32(c[r][0], a, b0);
            c[r][1] = vfmaq_f32(c[r][1], a, b1);
            c[r][2] = vfmaq_f32(c[r][2], a, b2);
            c[r][3] = vfmaq_f32(c[r][3], a, b3);
        }
    }
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) vst1q_f32(out + r * ldo + 4 * q, c[r][q]);
}

/* Four rows x 32 channels as two 4 x 16 blocks. */
void bd_isa_fgemm4(const float *A, int K, const float *Wt, long ldt, float *out)
{
    for (int j0 = 0; j0 < BD_FM; j0 += 16) fma4x16(K, A, K, 1, Wt + j0, ldt, out + j0, BD_FM);
}

/* The 8 x 32 tile as four 4 x 16 blocks. Rows of A past `rows` are readable (packed panels). */
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

/* ---- integer GEMMs: the 8 x 32 tile as four 4 x 16 blocks, 16 accumulators of 4 int32 ---- */

/* Group q of rows 0..3 of an A panel (A at the block's first row) as one vector: row r's 4
 * bytes in lanes 4r .. 4r + 3. */
static inline uint8x16_t a_groups(const unsigned char *A, long ars, long aks, int q)
{
    uint32_t v[4];
    for (int r = 0; r < 4; ++r) memcpy(v + r, A + 4 * (r * ars + q * aks), 4);
    return vreinterpretq_u8_u32(vld1q_u32(v));
}

/* acc[r][c] (columns 4c .. 4c + 3) += b (8 columns: lo = 0..3 of the pair, hi = 4..7) times lane L of a. */
#define BD_MLAL(acc, c, b, a, L)                                                   \
    do {                                                                           \
        acc[c] = vmlal_laneq_s16(acc[c], vget_low_s16(b), a, L);                   \
        acc[(c) + 1] = vmlal_high_laneq_s16(acc[(c) + 1], b, a, L);                \
    } while (0)

/* The same for the int8 signal: z = a - 128 (a's top bit flipped), as int8. */
static inline int8x16_t z_groups(const unsigned char *A, long ars, long aks, int q)
{
    return vreinterpretq_s8_u8(veorq_u8(a_groups(A, ars, aks, q), vdupq_n_u8(0x80)));
}

static inline void zero4x4(int32x4_t c[4][4])
{
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_s32(0);
}

/* The block into out (rows ldo apart), added to out's when add. */
static inline void store4x16(int32x4_t c[4][4], int32_t *out, long ldo, int add)
{
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) {
            int32_t *o = out + r * ldo + 4 * q;
            vst1q_s32(o, add ? vaddq_s32(c[r][q], vld1q_s32(o)) : c[r][q]);
        }
}

/* A 4 x 16 block (bd_iblock_fn): 16 accumulators, STEP() adds group q's products, then the
 * block is stored. NEON's forms are signed x signed, so no column sums are needed. */
#define BD_NEON_BLOCK(name, STEP)                                                                  \
    static void name(int kg, const unsigned char *A, long ars, long aks, const unsigned char *B,   \
                     const int32_t *bsum, int32_t *out, long ldo, int add)                         \
    {                                                                                              \
        int32x4_t c[4][4];                                                                         \
        (void)bsum;                                                                                \
        zero4x4(c);                                                                                \
        for (int q = 0; q < kg; ++q) STEP();                                                       \
        store4x16(c, out, ldo, add);                                                               \
    }

/* int16 groups: vld2q splits each 8 columns' pairs into the k-even and k-odd values; row r's
 * pair is lanes 2r, 2r + 1 of a; vmlal (int16 x int16 widened into int32). */
#define BD_ROW16(r)                                  \
    BD_MLAL(c[r], 0, lo.val[0], a, 2 * (r));         \
    BD_MLAL(c[r], 0, lo.val[1], a, 2 * (r) + 1);     \
    BD_MLAL(c[r], 2, hi.val[0], a, 2 * (r));         \
    BD_MLAL(c[r], 2, hi.val[1], a, 2 * (r) + 1)
#define BD_I16_STEP()                                                            \
    do {                                                                         \
        const int16_t *b = (const int16_t *)(B + 4 * BD_NR * q);                 \
        const int16x8x2_t lo = vld2q_s16(b), hi = vld2q_s16(b + 16);             \
        const int16x8_t a = vreinterpretq_s16_u8(a_groups(A, ars, aks, q));      \
        BD_ROW16(0);                                                             \
        BD_ROW16(1);                                                             \
        BD_ROW16(2);                                                             \
        BD_ROW16(3);                                                             \
    } while (0)
BD_NEON_BLOCK(igemm4x16_i16, BD_I16_STEP)
#undef BD_ROW16
#undef BD_I16_STEP

#if defined(__ARM_FEATURE_DOTPROD)
/* int8 groups with the dot product (armv8.2-a+dotprod): SDOT adds 4 products s8 x s8 per
 * int32 lane (4 columns' groups against row r's, lane r of z). */
#define BD_DOT(r)                                      \
    c[r][0] = vdotq_laneq_s32(c[r][0], b0, z, r);      \
    c[r][1] = vdotq_laneq_s32(c[r][1], b1, z, r);      \
    c[r][2] = vdotq_laneq_s32(c[r][2], b2, z, r);      \
    c[r][3] = vdotq_laneq_s32(c[r][3], b3, z, r)
#define BD_I8_STEP()                                                                                      \
    do {                                                                                                  \
        const int8_t *b = (const int8_t *)(B + 4 * BD_NR * q);                                            \
        const int8x16_t z = z_groups(A, ars, aks, q);                                                     \
        const int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16), b2 = vld1q_s8(b + 32), b3 = vld1q_s8(b + 48); \
        BD_DOT(0);                                                                                        \
        BD_DOT(1);                                                                                        \
        BD_DOT(2);                                                                                        \
        BD_DOT(3);                                                                                        \
    } while (0)
BD_NEON_BLOCK(igemm4x16_i8, BD_I8_STEP)
#undef BD_DOT
#undef BD_I8_STEP
#else
/* int8 groups in the base ISA: vld4q splits 16 columns' groups into their 4 slots, z and the
 * slots are widened to int16, then vmlal as for int16 (row r, slot t: lane 4 (r % 2) + t of
 * the rows' low or high half; lanes must be constants, hence the slots spelt out). */
#define BD_SLOT(T)                                                                  \
    do {                                                                            \
        const int16x8_t lo = vmovl_s8(vget_low_s8(b.val[T])), hi = vmovl_high_s8(b.val[T]); \
        BD_MLAL(c[0], 0, lo, z01, T);                                               \
        BD_MLAL(c[0], 2, hi, z01, T);                                               \
        BD_MLAL(c[1], 0, lo, z01, 4 + T);                                           \
        BD_MLAL(c[1], 2, hi, z01, 4 + T);                                           \
        BD_MLAL(c[2], 0, lo, z23, T);                                               \
        BD_MLAL(c[2], 2, hi, z23, T);                                               \
        BD_MLAL(c[3], 0, lo, z23, 4 + T);                                           \
        BD_MLAL(c[3], 2, hi, z23, 4 + T);                                           \
    } while (0)
#define BD_I8_STEP()                                                                \
    do {                                                                            \
        const int8x16x4_t b = vld4q_s8((const int8_t *)(B + 4 * BD_NR * q));        \
        const int8x16_t z = z_groups(A, ars, aks, q);                               \
        const int16x8_t z01 = vmovl_s8(vget_low_s8(z)), z23 = vmovl_high_s8(z);     \
        BD_SLOT(0);                                                                 \
        BD_SLOT(1);                                                                 \
        BD_SLOT(2);                                                                 \
        BD_SLOT(3);                                                                 \
    } while (0)
BD_NEON_BLOCK(igemm4x16_i8, BD_I8_STEP)
#undef BD_SLOT
#undef BD_I8_STEP
#endif
#undef BD_MLAL
#undef BD_NEON_BLOCK

BD_IGEMM_FROM_BLOCKS(igemm4x16_i16, igemm4x16_i8)

/* ---- double GEMMs in k order: 4 rows x 8 columns in 16 registers of 2 doubles per pass, a
 * multiplication and an addition per step (vmulq then vaddq: never fused) ---- */

/* Columns j0..j0+7 of the BD_DQ rows: c += a_r(k) * b for k < K, b the 8 columns of step k:
 * B's floats (columns from cols on read as 0) or, when W is set, +-1 from bits j0.. of W's
 * rows (ldw words apart, from bit `bit0`). */
static inline void dgemm_cols8(int K, const float *const a[BD_DQ], long aks, const float *B, long ldb, int cols,
                               const uint64_t *W, long ldw, long bit0, int j0, double *out)
{
    float64x2_t c[BD_DQ][4];
    for (int r = 0; r < BD_DQ; ++r)
        for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_f64(0.0);
    const int n = imin(8, cols - j0);
    for (int k = 0; k < K; ++k) {
        double bd[8];
        if (W) {
            const long bit = bit0 + j0;
            const unsigned bits = (unsigned)((W[(long)k * ldw + (bit >> 6)] >> (bit & 63)) & 0xffu);
            for (int j = 0; j < 8; ++j) bd[j] = ((bits >> j) & 1u) ? 1.0 : -1.0;
        } else {
            const float *bk = B + (long)k * ldb + j0;
            for (int j = 0; j < 8; ++j) bd[j] = j < n ? (double)bk[j] : 0.0;
        }
        float64x2_t b[4];
        for (int q = 0; q < 4; ++q) b[q] = vld1q_f64(bd + 2 * q);
        for (int r = 0; r < BD_DQ; ++r) {
            const float64x2_t av = vdupq_n_f64((double)a[r][(long)k * aks]);
            for (int q = 0; q < 4; ++q) c[r][q] = vaddq_f64(c[r][q], vmulq_f64(av, b[q]));
        }
    }
    for (int r = 0; r < BD_DQ; ++r)
        for (int q = 0; q < 4; ++q) vst1q_f64(out + r * BD_DN + j0 + 2 * q, c[r][q]);
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

/* 4 bits from 4 all-ones/zero lanes: lane i gives bit i. */
static inline unsigned bits4(uint32x4_t m)
{
    const uint32_t w[4] = {1u, 2u, 4u, 8u};
    return vaddvq_u32(vandq_u32(m, vld1q_u32(w)));
}

/* le[0..3] as lanes of all ones (le) or zero. */
static inline uint32x4_t le_mask4(const uint8_t *le)
{
    const uint32_t v[4] = {le[0], le[1], le[2], le[3]};
    return vcgtq_u32(vld1q_u32(v), vdupq_n_u32(0));
}

/* 4 channels of x (int8, int16 or int32 at element i) as int32 lanes: exact. */
static inline int32x4_t load4_int(const void *x, int x_type, long i)
{
    if (x_type == BD_I8) {
        const int8_t *p = (const int8_t *)x + i;
        const int32_t v[4] = {p[0], p[1], p[2], p[3]};
        return vld1q_s32(v);
    }
    if (x_type == BD_I16) return vmovl_s16(vld1_s16((const int16_t *)x + i));
    return vld1q_s32((const int32_t *)x + i);
}

/* 4 lanes at a time, compared in int32 (exact for every x_type); the tail per channel. */
void bd_isa_threshold_int(const void *x, int x_type, long pixels, int C, const int32_t *t, const uint8_t *le,
                          uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const long xo = p * C + c;
            const int end = imin(C - c, 64);
            int b = 0;
            uint64_t word = 0;
            for (; b + 4 <= end; b += 4) {
                const int32x4_t v = load4_int(x, x_type, xo + b), tv = vld1q_s32(t + c + b);
                const uint32x4_t bit = vbslq_u32(le_mask4(le + c + b), vcleq_s32(v, tv), vcgeq_s32(v, tv));
                word |= (uint64_t)bits4(bit) << b;
            }
            *y++ = word | bd_threshold_bits_int(x, x_type, xo, t + c, le + c, b, end);
        }
    }
}

/* 4 lanes per compare (NaN compares false, as in numpy); the tail per channel. */
void bd_isa_threshold_f32(const float *x, long pixels, int C, const float *t, const uint8_t *le, uint64_t *y)
{
    for (long p = 0; p < pixels; ++p) {
        for (int c = 0; c < C; c += 64) {
            const float *xc = x + p * C + c;
            const int end = imin(C - c, 64);
            int b = 0;
            uint64_t word = 0;
            for (; b + 4 <= end; b += 4) {
                const float32x4_t v = vld1q_f32(xc + b), tv = vld1q_f32(t + c + b);
                const uint32x4_t bit = vbslq_u32(le_mask4(le + c + b), vcleq_f32(v, tv), vcgeq_f32(v, tv));
                word |= (uint64_t)bits4(bit) << b;
            }
            *y++ = word | bd_threshold_bits_f32(xc, t + c, le + c, b, end);
        }
    }
}

#endif /* BD_ISA_NEON */
