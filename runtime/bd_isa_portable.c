/* The portable micro-kernels (bd_isa.h): plain C99 that the compiler may vectorise, with
 * bd_popcount64 (the popcnt instruction where the target has one, else the SWAR count).
 * Compiled only when bd_isa.h selects BD_ISA_PORTABLE. */
#include "bd_isa.h"

#if defined(BD_ISA_PORTABLE)

#define BD_PCOLS 32 /* channels whose counts are collected before one store to the sink */

static int imin(int a, int b) { return a < b ? a : b; }

/* Filters as rows: each filter word is read once for the 4 rows. */
void bd_isa_bgemm4(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    const uint64_t *a0 = A, *a1 = A + K, *a2 = A + 2 * K, *a3 = A + 3 * K;
    int32_t cnt[BD_QUAD][BD_PCOLS];
    for (int mb = m0; mb < m1; mb += BD_PCOLS) {
        const int len = imin(BD_PCOLS, m1 - mb);
        for (int j = 0; j < len; ++j) {
            const uint64_t *b = B + (long)(mb + j) * ldb;
            int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
            for (int k = 0; k < K; ++k) {
                const uint64_t bk = b[k];
                c0 += bd_popcount64(a0[k] ^ bk);
                c1 += bd_popcount64(a1[k] ^ bk);
                c2 += bd_popcount64(a2[k] ^ bk);
                c3 += bd_popcount64(a3[k] ^ bk);
            }
            cnt[0][j] = c0;
            cnt[1][j] = c1;
            cnt[2][j] = c2;
            cnt[3][j] = c3;
        }
        for (int r = 0; r < BD_QUAD; ++r) bd_bsink_store(o, r, mb - m0, cnt[r], len);
    }
}

/* Each filter word is read once for the o->rows rows. */
void bd_isa_bgemm_few(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o)
{
    int32_t cnt[BD_QUAD][BD_PCOLS];
    for (int mb = m0; mb < m1; mb += BD_PCOLS) {
        const int len = imin(BD_PCOLS, m1 - mb);
        for (int j = 0; j < len; ++j) {
            const uint64_t *b = B + (long)(mb + j) * ldb;
            for (int r = 0; r < o->rows; ++r) {
                const uint64_t *a = A + (long)r * K;
                int c = 0;
                for (int k = 0; k < K; ++k) c += bd_popcount64(a[k] ^ b[k]);
                cnt[r][j] = c;
            }
        }
        for (int r = 0; r < o->rows; ++r) bd_bsink_store(o, r, mb - m0, cnt[r], len);
    }
}

void bd_isa_fgemm4(const float *A, int K, const float *Wt, long ldt, float *out)
{
    float c0[BD_FM], c1[BD_FM], c2[BD_FM], c3[BD_FM];
    for (int j = 0; j < BD_FM; ++j) c0[j] = c1[j] = c2[j] = c3[j] = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float *b = Wt + (long)k * ldt;
        const float a0 = A[k], a1 = A[K + k], a2 = A[2 * K + k], a3 = A[3 * K + k];
        for (int j = 0; j < BD_FM; ++j) {
            c0[j] += a0 * b[j];
            c1[j] += a1 * b[j];
            c2[j] += a2 * b[j];
            c3[j] += a3 * b[j];
        }
    }
    memcpy(out, c0, sizeof c0);
    memcpy(out + BD_FM, c1, sizeof c1);
    memcpy(out + 2 * BD_FM, c2, sizeof c2);
    memcpy(out + 3 * BD_FM, c3, sizeof c3);
}

static void sgemm_acc(int kc, const float *Ap, long ars, long aks, const float *Bp, float *acc)
{
    for (int i = 0; i < BD_MR * BD_NR; ++i) acc[i] = 0.0f;
    for (int k = 0; k < kc; ++k) {
        const float *b = Bp + k * BD_NR, *a = Ap + k * aks;
        for (int r = 0; r < BD_MR; ++r) {
            const float av = a[r * ars];
            float *o = acc + r * BD_NR;
            for (int j = 0; j < BD_NR; ++j) o[j] += av * b[j];
        }
    }
}

void bd_isa_sgemm_tile(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                       int cols, double alpha, int add)
{
    float acc[BD_MR * BD_NR];
    sgemm_acc(kc, Ap, ars, aks, Bp, acc);
    bd_sgemm_store(acc, C, ldc, rows, cols, alpha, add);
}

/* Group q of a B panel as rows of int16, b[t][j] = slot t of column j (int16 or int8 values),
 * so that every product is a plain multiply-add along a row (a loop the compiler vectorises),
 * shared by the BD_MR rows of A. */
static void group_rows(const void *Bp, int wide, int q, int16_t b[][BD_NR])
{
    const int g = wide ? BD_IG16 : BD_IG8;
    for (int j = 0; j < BD_NR; ++j)
        for (int t = 0; t < g; ++t) {
            const long i = ((long)q * BD_NR + j) * g + t;
            b[t][j] = wide ? ((const int16_t *)Bp)[i] : ((const int8_t *)Bp)[i];
        }
}

/* The int16 groups: int32 products and sums. */
void bd_isa_igemm_i16(int kg, const void *Ap, long ars, long aks, const void *Bp, int32_t *C, long ldc, int rows,
                      int cols, int add)
{
    const int16_t *A = (const int16_t *)Ap;
    int32_t acc[BD_MR * BD_NR] = {0};
    for (int q = 0; q < kg; ++q) {
        int16_t b[BD_IG16][BD_NR];
        group_rows(Bp, 1, q, b);
        for (int r = 0; r < BD_MR; ++r) {
            const int16_t *a = A + (r * ars + q * aks) * BD_IG16;
            const int32_t a0 = a[0], a1 = a[1];
            int32_t *o = acc + r * BD_NR;
            for (int j = 0; j < BD_NR; ++j) o[j] += a0 * b[0][j] + a1 * b[1][j];
        }
    }
    bd_igemm_store(acc, BD_NR, C, ldc, rows, cols, add);
}

/* The int8 groups: the 4 products of a group, a (0..255) times e (-1, 0, 1), and their sum fit
 * in int16 (at most 1020), so they are formed in int16 (narrow multiplies) and widened once
 * per group into the int32 sums. */
void bd_isa_igemm_i8(int kg, const void *Ap, long ars, long aks, const void *Bp, const int32_t *bsum, int32_t *C,
                     long ldc, int rows, int cols, int add)
{
    const uint8_t *A = (const uint8_t *)Ap;
    int32_t acc[BD_MR * BD_NR];
    for (int r = 0; r < BD_MR; ++r)
        for (int j = 0; j < BD_NR; ++j) acc[r * BD_NR + j] = -128 * bsum[j];
    for (int q = 0; q < kg; ++q) {
        int16_t b[BD_IG8][BD_NR];
        group_rows(Bp, 0, q, b);
        for (int r = 0; r < BD_MR; ++r) {
            const uint8_t *a = A + (r * ars + q * aks) * BD_IG8;
            const int16_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
            int32_t *o = acc + r * BD_NR;
            for (int j = 0; j < BD_NR; ++j)
                o[j] += (int16_t)(a0 * b[0][j] + a1 * b[1][j] + a2 * b[2][j] + a3 * b[3][j]);
        }
    }
    bd_igemm_store(acc, BD_NR, C, ldc, rows, cols, add);
}

/* Row k of B as BD_DN doubles: f32 values (columns from cols on are 0), or e(bits j0..). */
typedef void (*drow_fn)(const void *B, long k, long ldb, long j0, int cols, double *b);

static void drow_f32(const void *B, long k, long ldb, long j0, int cols, double *b)
{
    const float *bk = (const float *)B + k * ldb;
    (void)j0;
    for (int j = 0; j < cols; ++j) b[j] = (double)bk[j];
    for (int j = cols; j < BD_DN; ++j) b[j] = 0.0;
}

static void drow_b1(const void *B, long k, long ldw, long j0, int cols, double *b)
{
    const uint32_t bits = (uint32_t)(((const uint64_t *)B)[k * ldw + (j0 >> 6)] >> (j0 & 63));
    (void)cols;
    for (int j = 0; j < BD_DN; ++j) b[j] = ((bits >> j) & 1u) ? 1.0 : -1.0;
}

/* The tile in k order: acc[r][j] = acc[r][j] + a_r(k) * b_k[j], the product and the sum in
 * separate statements (missing rows of A read row 0 again: computed, never stored). */
static void dgemm4(int K, const float *A, long ars, long aks, int rows, const void *B, long ldb, long j0, int cols,
                   drow_fn row, double *out)
{
    const float *a[BD_DQ];
    double acc[BD_DQ][BD_DN], b[BD_DN];
    for (int r = 0; r < BD_DQ; ++r) a[r] = A + (r < rows ? r : 0) * ars;
    memset(acc, 0, sizeof acc);
    for (long k = 0; k < K; ++k) {
        row(B, k, ldb, j0, cols, b);
        for (int r = 0; r < BD_DQ; ++r) {
            const double av = (double)a[r][k * aks];
            for (int j = 0; j < BD_DN; ++j) {
                const double p = av * b[j];
                acc[r][j] = acc[r][j] + p;
            }
        }
    }
    for (int r = 0; r < BD_DQ; ++r) memcpy(out + r * BD_DN, acc[r], sizeof(double) * BD_DN);
}

void bd_isa_dgemm4_f32(int K, const float *A, long ars, long aks, int rows, const float *B, long ldb, int cols,
                       double *out)
{
    dgemm4(K, A, ars, aks, rows, B, ldb, 0, cols, drow_f32, out);
}

void bd_isa_dgemm4_b1(int K, const float *A, long ars, long aks, int rows, const uint64_t *B, long ldw, long j0,
                      double *out)
{
    dgemm4(K, A, ars, aks, rows, B, ldw, j0, BD_DN, drow_b1, out);
}

void bd_isa_threshold_int(const void *x, int x_type, long pixels, int C, const int32_t *t, const uint8_t *le,
                          uint64_t *y)
{
    for (long p = 0; p < pixels; ++p)
        for (int c = 0; c < C; c += 64)
            *y++ = bd_threshold_bits_int(x, x_type, p * C + c, t + c, le + c, 0, imin(64, C - c));
}

void bd_isa_threshold_f32(const float *x, long pixels, int C, const float *t, const uint8_t *le, uint64_t *y)
{
    for (long p = 0; p < pixels; ++p)
        for (int c = 0; c < C; c += 64) *y++ = bd_threshold_bits_f32(x + p * C + c, t + c, le + c, 0, imin(64, C - c));
}

#endif /* BD_ISA_PORTABLE */
