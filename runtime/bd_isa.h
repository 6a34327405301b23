/* boldc runtime: the ISA layer (docs/backend.md, "The ISA layer").
 *
 * The drivers (bd_boolean.c, bd_float.c, bd_grad.c) do the geometry, packing, blocking
 * and threads in plain C and call the micro-kernels declared here. Every ISA implements
 * all of them, with these signatures, in its own file bd_isa_<isa>.c, whose body is
 * compiled only when this header selects that ISA; nothing else in the runtime tests an
 * ISA macro. Exactly one ISA is selected, from the compiler's target macros:
 *
 *   BD_ISA_AVX512    AVX-512F, BW, VL, VPOPCNTDQ and VNNI (-march=native on such a CPU: every
 *                    CPU with VPOPCNTDQ and BW has VNNI, Ice Lake and Zen 4 on; the isa="avx512" flags);
 *                    with AMX-TILE and AMX-INT8 as well (Sapphire Rapids on, on Linux: the
 *                    isa="amx" flags), BD_ISA_AMX too: the integer GEMMs then run on the tile unit
 *                    (bd_isa_amx.c) once the kernel grants this process its tile state
 *   BD_ISA_AVX2      AVX2 + FMA + POPCNT without VPOPCNTDQ (-march=native on a Haswell or
 *                    Zen CPU, -mavx2 -mfma -mpopcnt)
 *   BD_ISA_NEON      aarch64 (Advanced SIMD is part of the base ISA: any aarch64 compiler)
 *   BD_ISA_PORTABLE  any other target, and any target with -DBD_NO_SIMD: plain C that the
 *                    compiler may vectorise, with the popcnt instruction where it has one
 *
 * BD_SIMD_NAME names the selected ISA (bd_build_info() reports it as "simd=...").
 *
 * Properties of an ISA the drivers need are constants, tested with a plain C `if`:
 *
 *   BD_ISA_BGEMM_TRANSPOSED  1: bd_isa_bgemm4 reads the filters transposed, B[k * ldb + m]
 *                            ([K][M] words, columns zero-padded to a multiple of BD_BT_PAD);
 *                            0: as rows, B[m * ldb + k].
 *   BD_ISA_HAS_AMX           1: a BD_ISA_AMX build (whether the tiles run is bd_isa_amx_ready()).
 *
 * The tile shapes (BD_QUAD, BD_FQUAD x BD_FM, BD_MR x BD_NR) and the integer panels' groups
 * (BD_IG16, BD_IG8) are the same for every ISA:
 * the scratch formulas depend on them (and boldc/backend/kernels.py and grad_kernels.py
 * mirror those); an ISA with narrower registers covers a tile with several of them.
 *
 * Adding an ISA: one #elif branch below (its BD_ISA_<isa> macro, BD_SIMD_NAME and the
 * properties) and one file bd_isa_<isa>.c (body in `#if defined(BD_ISA_<isa>)`), listed in
 * RUNTIME_FILES of boldc/backend/build.py.
 */
#ifndef BD_ISA_H
#define BD_ISA_H

#include "boldc_rt.h"

/* ---- selection ----------------------------------------------------------------------- */
#if !defined(BD_NO_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VPOPCNTDQ__) && defined(__AVX512VNNI__)
#define BD_ISA_AVX512 1
#define BD_ISA_BGEMM_TRANSPOSED 1
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__) && defined(__x86_64__)
#define BD_ISA_AMX 1
#define BD_SIMD_NAME "avx512-amx"
#define BD_ISA_HAS_AMX 1
#else
#define BD_SIMD_NAME "avx512-vpopcntdq"
#define BD_ISA_HAS_AMX 0
#endif
#elif !defined(BD_NO_SIMD) && defined(__AVX2__) && defined(__FMA__) && defined(__POPCNT__)
#define BD_ISA_AVX2 1
#define BD_SIMD_NAME "avx2"
#define BD_ISA_HAS_AMX 0
#define BD_ISA_BGEMM_TRANSPOSED 1
#elif !defined(BD_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define BD_ISA_NEON 1
#define BD_SIMD_NAME "neon"
#define BD_ISA_HAS_AMX 0
#define BD_ISA_BGEMM_TRANSPOSED 1
#else
#define BD_ISA_PORTABLE 1
#define BD_SIMD_NAME "portable"
#define BD_ISA_HAS_AMX 0
#define BD_ISA_BGEMM_TRANSPOSED 0
#endif

/* ---- tile shapes (every ISA) ------------------------------------------------------------ */
#define BD_QUAD 4    /* rows of one bd_isa_bgemm4 call */
#define BD_BT_PAD 8  /* transposed filter columns are zero-padded to a multiple of this */
#define BD_FQUAD 4   /* bd_isa_fgemm4: rows ... */
#define BD_FM 32     /* ... x output channels */
#define BD_MR 8      /* bd_isa_sgemm_tile and bd_isa_igemm_*: rows of an A micro-panel ... */
#define BD_NR 32     /* ... x columns of a B panel */
#define BD_IG16 2    /* bd_isa_igemm_i16: k values per 4-byte group of a panel (int16 pairs) */
#define BD_IG8 4     /* bd_isa_igemm_i8: k values per 4-byte group (bytes) */
#define BD_DQ 4      /* bd_isa_dgemm4_*: rows ... */
#define BD_DN 32     /* ... x columns, double accumulators */

/* ---- binary GEMM ------------------------------------------------------------------------ */

/* Where a binary GEMM's counts go, row r (r < rows) and column j (channel m0 + j):
 * counts[r * ldc + j] = count when y is NULL, else the finished pre-activation
 * y[r * ldy + j] = base[j] + k2 * count in out_type (s = sign * (fan_in - 2 * count) +
 * e(bias), base = sign * fan_in + e(bias), k2 = -2 * sign: exact in out_type by
 * construction). */
typedef struct {
    int rows;            /* rows stored: 1..BD_QUAD */
    int32_t *counts;
    long ldc;
    void *y;             /* first element of row 0 (column 0), or NULL */
    long ldy;
    int out_type;        /* BD_I8, BD_I16 or BD_I32 */
    const int32_t *base; /* base[j] for column j */
    int k2;              /* -2 (xnor) or +2 (xor) */
} bd_bsink;

/* count(r, m) = sum_k popcount(A[r * K + k] ^ B_m[k]) for the BD_QUAD rows of A (all
 * readable; rows beyond o->rows are computed and dropped) and m0 <= m < m1, sent to o at
 * column m - m0. B_m[k] is B[k * ldb + m] if BD_ISA_BGEMM_TRANSPOSED, else B[m * ldb + k]. */
void bd_isa_bgemm4(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o);
/* The same for the o->rows (1..BD_QUAD) rows of A only, B always as rows (B[m * ldb + k]):
 * a linear layer at a batch below BD_QUAD, which has no transposed filters. */
void bd_isa_bgemm_few(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, const bd_bsink *o);

/* ---- float GEMMs ------------------------------------------------------------------------ */

/* out[r * BD_FM + j] = sum_k A[r * K + k] * Wt[k * ldt + j] for r < BD_FQUAD, j < BD_FM,
 * accumulated in k order in float32 (an ISA may fuse each multiply-add: one rounding
 * instead of two, within the float tolerance). */
void bd_isa_fgemm4(const float *A, int K, const float *Wt, long ldt, float *out);
/* The rows x cols corner of the BD_MR x BD_NR tile acc(r, j) = sum_k A(r, k) * Bp[k * BD_NR + j]
 * (k < kc, in k order in float32, A(r, k) = Ap[r * ars + k * aks]): C[r * ldc + j] =
 * (float)(alpha * acc), or C += that when add. */
void bd_isa_sgemm_tile(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                       int cols, double alpha, int add);

/* Double GEMMs in a fixed order (common.matmul_in_order): for r < BD_DQ, j < BD_DN,
 * out[r * BD_DN + j] = the sum over k = 0, 1, ..., K - 1 of (double)A(r, k) * B(k, j), each
 * step acc = acc + product (the product of two f32 or +-1 values is exact; one rounding per
 * addition, no fused multiply-add), acc starting at +0. A(r, k) = A[r * ars + k * aks] for
 * r < rows (1..BD_DQ; the other rows of out are unspecified). Vectorised across j.
 *   _f32: B(k, j) = B[k * ldb + j] for j < cols (1..BD_DN; columns from cols on read as 0);
 *   _b1:  B(k, j) = e(bit j0 + j of the row B + k * ldw), +1 for 1 and -1 for 0 (j0 a multiple
 *         of 32; bits beyond the row read as -1). */
void bd_isa_dgemm4_f32(int K, const float *A, long ars, long aks, int rows, const float *B, long ldb, int cols,
                       double *out);
void bd_isa_dgemm4_b1(int K, const float *A, long ars, long aks, int rows, const uint64_t *B, long ldw, long j0,
                      double *out);

/* ---- integer GEMMs (the exact sums of integer signals against e = +-1, bd_gemm.c) ----------- */

/* The BD_MR x BD_NR tile T(r, j) = sum_k A(r, k) * B(k, j) over kg groups of k, in int32
 * (exact: the driver keeps every sum in range), and its rows x cols corner (1..BD_MR,
 * 1..BD_NR) into C: C[r * ldc + j] = T(r, j), or += when add. The panels are arrays of 4-byte
 * groups, element k of a group at k % (its size): row r's group q of A is group r * ars +
 * q * aks of Ap, column j's group q of B is group q * BD_NR + j of Bp. All BD_MR rows of A
 * are readable.
 *   _i16: int16 A (the signal) and B (e: -1, 0 or 1), BD_IG16 values per group;
 *   _i8:  BD_IG8 values per group: A as the bytes a = z + 128 of the int8 signal z, B as
 *         int8 e; bsum[j] = sum_k B(k, j), and the tile is sum_k z * e = sum_k a * e -
 *         128 * bsum[j] (the unsigned-by-signed form of vpdpbusd and vpmaddubsw). */
void bd_isa_igemm_i16(int kg, const void *Ap, long ars, long aks, const void *Bp, int32_t *C, long ldc, int rows,
                      int cols, int add);
void bd_isa_igemm_i8(int kg, const void *Ap, long ars, long aks, const void *Bp, const int32_t *bsum, int32_t *C,
                     long ldc, int rows, int cols, int add);

/* ---- integer GEMMs on the AMX tile unit (bd_isa_amx.c) ------------------------------------------ */

/* 1 when the integer GEMMs run on AMX tiles in this process: a BD_ISA_AMX build, the Linux kernel
 * granted the tile state (arch_prctl ARCH_REQ_XCOMP_PERM) and BOLDC_NO_AMX is not set in the
 * environment at the first call; 0 otherwise (every other build). The GEMM driver asks once per
 * call, outside its threads, and packs the AMX panels below only when it is 1. */
int bd_isa_amx_ready(void);
/* The tile T(r, j) = sum_k A(r, k) * B(k, j), r < rows (1..2 * BD_MR: one panel of A or two in a
 * row), j < BD_NR, over the kp values of k of the AMX panels (kp a multiple of BD_IG16 for i16, of
 * BD_IG8 for i8), and its rows x cols corner into C as bd_isa_igemm_* do (C[r * ldc + j] = T(r, j),
 * or += when add). The panels:
 *   A, i8:  row r at Ap + r * lda: the bytes a = z + 128 (the _i8 kernel's), and T = sum a * e -
 *           128 * bsum[j] (bsum[j] = sum_k B(k, j));
 *   A, i16: the int16 signal z = 256 * hi + lo in two byte planes, hi (int8, z >> 8) of row r at
 *           Ap + r * lda and lo (uint8, z & 255) at Ap + r * lda + lda / 2; bsum unused;
 *   B:      int8 e in groups of 4 (the _i8 kernel's B groups): e(k, j) at byte
 *           (k / 4 * BD_NR + j) * 4 + k % 4, zero where k >= kp.
 * Whole 64-byte steps of k run on the tiles (tdpbusd / tdpbssd), the rest in plain C. */
void bd_isa_igemm_amx(int i8, int kp, long lda, const void *Ap, const void *Bp, const int32_t *bsum, int32_t *C,
                      long ldc, int rows, int cols, int add);

/* ---- threshold packers ------------------------------------------------------------------ */

/* `pixels` runs of C channels (run p at element p * C of x) into runs of BD_WORDS(C) words
 * (run p at y + p * BD_WORDS(C)): bit c % 64 of word c / 64 is le[c] ? x[c] <= t[c] :
 * x[c] >= t[c]; padding bits 0. x of x_type (BD_I8, BD_I16, BD_I32) compared exactly with
 * the int32 t; or float32 x and t. */
void bd_isa_threshold_int(const void *x, int x_type, long pixels, int C, const int32_t *t, const uint8_t *le,
                          uint64_t *y);
void bd_isa_threshold_f32(const float *x, long pixels, int C, const float *t, const uint8_t *le, uint64_t *y);

/* ---- plain-C pieces every ISA shares ---------------------------------------------------- */

static inline size_t bd_type_size(int type)
{
    return type == BD_I8 ? 1 : (type == BD_I16 ? 2 : 4);
}

/* y[off + j] = base[j] + k2 * cnt[j] for j < len, narrowed to out_type (exact by construction). */
static inline void bd_store_preact(int out_type, void *y, long off, const int32_t *base, int k2, const int32_t *cnt,
                                   int len)
{
    switch (out_type) {
    case BD_I8: {
        int8_t *o = (int8_t *)y + off;
        for (int j = 0; j < len; ++j) o[j] = (int8_t)(base[j] + k2 * cnt[j]);
        break;
    }
    case BD_I16: {
        int16_t *o = (int16_t *)y + off;
        for (int j = 0; j < len; ++j) o[j] = (int16_t)(base[j] + k2 * cnt[j]);
        break;
    }
    default: {
        int32_t *o = (int32_t *)y + off;
        for (int j = 0; j < len; ++j) o[j] = base[j] + k2 * cnt[j];
        break;
    }
    }
}

/* Row r, columns j..j+len-1 of a sink from plain counts. */
static inline void bd_bsink_store(const bd_bsink *o, int r, int j, const int32_t *cnt, int len)
{
    if (r >= o->rows) return;
    if (!o->y) memcpy(o->counts + r * o->ldc + j, cnt, sizeof(int32_t) * (size_t)len);
    else bd_store_preact(o->out_type, o->y, r * o->ldy + j, o->base + j, o->k2, cnt, len);
}

static inline int32_t bd_load_int(const void *x, int x_type, long i)
{
    switch (x_type) {
    case BD_I8: return ((const int8_t *)x)[i];
    case BD_I16: return ((const int16_t *)x)[i];
    default: return ((const int32_t *)x)[i];
    }
}

/* Bits b0..end-1 of a threshold word, one channel at a time: x[xo + b] against t[b], le[b]. */
static inline uint64_t bd_threshold_bits_int(const void *x, int x_type, long xo, const int32_t *t, const uint8_t *le,
                                             int b0, int end)
{
    uint64_t word = 0;
    for (int b = b0; b < end; ++b) {
        const int32_t v = bd_load_int(x, x_type, xo + b);
        const int bit = le[b] ? v <= t[b] : v >= t[b];
        word |= (uint64_t)bit << b;
    }
    return word;
}

static inline uint64_t bd_threshold_bits_f32(const float *x, const float *t, const uint8_t *le, int b0, int end)
{
    uint64_t word = 0;
    for (int b = b0; b < end; ++b) {
        const int bit = le[b] ? x[b] <= t[b] : x[b] >= t[b];
        word |= (uint64_t)bit << b;
    }
    return word;
}

/* The rows of a double-GEMM tile of A (rows past `rows` read row 0 again: computed, never
 * stored by the drivers). */
static inline void bd_dgemm_rows(const float *A, long ars, int rows, const float *a[BD_DQ])
{
    for (int r = 0; r < BD_DQ; ++r) a[r] = A + (r < rows ? r : 0) * ars;
}

/* C (rows x cols, rows ldc apart) = the integer tile acc (rows lda apart), or += when add. */
static inline void bd_igemm_store(const int32_t *acc, long lda, int32_t *C, long ldc, int rows, int cols, int add)
{
    for (int r = 0; r < rows; ++r) {
        int32_t *c = C + r * ldc;
        const int32_t *a = acc + r * lda;
        if (add) for (int j = 0; j < cols; ++j) c[j] += a[j];
        else for (int j = 0; j < cols; ++j) c[j] = a[j];
    }
}

/* An integer tile (bd_isa_igemm_*) as four blocks of 4 rows x 16 columns, for an ISA whose
 * registers hold one: block(kg, A at the block's first row, ars, aks, B at its first
 * column, bsum at its first column, out, ldo, add) puts the block into out (rows ldo apart).
 * A block wholly outside the corner is not computed; one cut by it goes through the stack. */
typedef void (*bd_iblock_fn)(int kg, const unsigned char *A, long ars, long aks, const unsigned char *B,
                             const int32_t *bsum, int32_t *out, long ldo, int add);

static inline void bd_igemm_blocks(bd_iblock_fn block, int kg, const void *Ap, long ars, long aks, const void *Bp,
                                   const int32_t *bsum, int32_t *C, long ldc, int rows, int cols, int add)
{
    for (int r0 = 0; r0 < rows; r0 += 4)
        for (int j0 = 0; j0 < cols; j0 += 16) {
            const unsigned char *A = (const unsigned char *)Ap + 4 * r0 * ars, *B = (const unsigned char *)Bp + 4 * j0;
            const int32_t *s = bsum ? bsum + j0 : NULL;
            if (rows - r0 >= 4 && cols - j0 >= 16) {
                block(kg, A, ars, aks, B, s, C + r0 * ldc + j0, ldc, add);
            } else {
                int32_t part[4 * 16];
                block(kg, A, ars, aks, B, s, part, 16, 0);
                bd_igemm_store(part, 16, C + r0 * ldc + j0, ldc, rows - r0 < 4 ? rows - r0 : 4,
                               cols - j0 < 16 ? cols - j0 : 16, add);
            }
        }
}

/* The two integer kernels of an ISA that covers the tile with 4 x 16 blocks. */
#define BD_IGEMM_FROM_BLOCKS(block_i16, block_i8)                                                         \
    void bd_isa_igemm_i16(int kg, const void *Ap, long ars, long aks, const void *Bp, int32_t *C, long ldc,  \
                          int rows, int cols, int add)                                                    \
    {                                                                                                     \
        bd_igemm_blocks(block_i16, kg, Ap, ars, aks, Bp, NULL, C, ldc, rows, cols, add);                  \
    }                                                                                                     \
    void bd_isa_igemm_i8(int kg, const void *Ap, long ars, long aks, const void *Bp, const int32_t *bsum,    \
                         int32_t *C, long ldc, int rows, int cols, int add)                               \
    {                                                                                                     \
        bd_igemm_blocks(block_i8, kg, Ap, ars, aks, Bp, bsum, C, ldc, rows, cols, add);                   \
    }

/* C tile (rows x cols of BD_MR x BD_NR, acc rows BD_NR apart) = alpha * acc, or += when add. */
static inline void bd_sgemm_store(const float *acc, float *C, long ldc, int rows, int cols, double alpha, int add)
{
    for (int r = 0; r < rows; ++r) {
        float *c = C + r * ldc;
        const float *a = acc + r * BD_NR;
        if (add) for (int j = 0; j < cols; ++j) c[j] += (float)(alpha * (double)a[j]);
        else for (int j = 0; j < cols; ++j) c[j] = (float)(alpha * (double)a[j]);
    }
}

#endif /* BD_ISA_H */
