/* Boolean layers: XNOR/XOR-popcount convolution and linear layers, thresholds.
 *
 * The core is a "binary GEMM": counts[r][m] = popcount(A_r XOR B_m) summed over K
 * words, A the rows (input rows or im2col patches of one pixel each), B the filters.
 * The pre-activation is s = sign * (m - 2 * count) + e(bias) (SPEC §2), m the true
 * fan-in: padding bits are 0 in both operands, so XOR leaves them 0.
 *
 * Paths: portable C (any popcount), and AVX-512 VPOPCNTDQ that vectorises over 8
 * output channels with the filters transposed ([K][M], in scratch) and register
 * tiles of 4 rows x 32 channels. See docs/backend.md for the measured speed.
 */
#include "boldc_rt.h"

#ifdef BD_SIMD_AVX512
#include <immintrin.h>
#endif

#define BD_QUAD 4     /* rows per micro-kernel call */
#define BD_CHUNK 32   /* pixels per thread work item in bconv2d */
#define BD_MCHUNK 64  /* output channels per work item in blinear */

static long round_up(long v, long m) { return (v + m - 1) / m * m; }

/* ---- portable reference ----------------------------------------------------------------- */

void bd_bgemm_ref(int rows, int K, const uint64_t *A, long lda, const uint64_t *B, long ldb, int m0, int m1,
                  int32_t *counts, long ldc)
{
    for (int r = 0; r < rows; ++r) {
        for (int m = m0; m < m1; ++m) {
            const uint64_t *a = A + r * lda, *b = B + (long)m * ldb;
            int acc = 0;
            for (int k = 0; k < K; ++k) acc += bd_popcount64(a[k] ^ b[k]);
            counts[r * ldc + (m - m0)] = acc;
        }
    }
}

/* 4 rows (stride K) against filters m0..m1 (rows of B, stride ldb): reads each filter once. */
static void bgemm4_rows(const uint64_t *A, int K, const uint64_t *B, long ldb, int m0, int m1, int32_t *counts,
                        long ldc)
{
    const uint64_t *a0 = A, *a1 = A + K, *a2 = A + 2 * K, *a3 = A + 3 * K;
    for (int m = m0; m < m1; ++m) {
        const uint64_t *b = B + (long)m * ldb;
        int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (int k = 0; k < K; ++k) {
            const uint64_t bk = b[k];
            c0 += bd_popcount64(a0[k] ^ bk);
            c1 += bd_popcount64(a1[k] ^ bk);
            c2 += bd_popcount64(a2[k] ^ bk);
            c3 += bd_popcount64(a3[k] ^ bk);
        }
        counts[0 * ldc + (m - m0)] = c0;
        counts[1 * ldc + (m - m0)] = c1;
        counts[2 * ldc + (m - m0)] = c2;
        counts[3 * ldc + (m - m0)] = c3;
    }
}

#ifdef BD_SIMD_AVX512
/* Where the 4 x 8-channel results of the SIMD kernel go: int32 counts (ldc apart), or,
 * with y set, the finished pre-activations s = base[m] + k2 * count in out_type. */
typedef struct {
    int32_t *counts;
    long ldc;
    void *y;           /* output rows (ldy elements apart), NULL to store counts */
    long ldy;
    int out_type;
    int rows;          /* valid rows of the 4 */
    const int32_t *base;
    int negate;        /* k2 = -2 (xnor) or +2 (xor) */
} bd_sink;

static inline void sink8(const bd_sink *o, int r, int j, __mmask8 keep, __m512i acc)
{
    if (r >= o->rows) return;
    if (!o->y) {
        _mm512_mask_cvtepi64_storeu_epi32(o->counts + r * o->ldc + j, keep, acc);
        return;
    }
    const __m512i base = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(keep, o->base + j));
    const __m512i twice = _mm512_slli_epi64(acc, 1);
    const __m512i v = o->negate ? _mm512_sub_epi64(base, twice) : _mm512_add_epi64(base, twice);
    switch (o->out_type) {
    case BD_I8: _mm512_mask_cvtepi64_storeu_epi8((int8_t *)o->y + r * o->ldy + j, keep, v); break;
    case BD_I16: _mm512_mask_cvtepi64_storeu_epi16((int16_t *)o->y + r * o->ldy + j, keep, v); break;
    default: _mm512_mask_cvtepi64_storeu_epi32((int32_t *)o->y + r * o->ldy + j, keep, v); break;
    }
}

/* 4 rows against filters transposed: Bt[k * ldbt + m], zero beyond M up to a multiple of 8.
 * Results for channels m0..m1 go to the sink at column (m - m0). */
static void bgemm4_bt_avx512(const uint64_t *A, int K, const uint64_t *Bt, long ldbt, int m0, int m1,
                             const bd_sink *o)
{
    const uint64_t *a0 = A, *a1 = A + K, *a2 = A + 2 * K, *a3 = A + 3 * K;
    int mb = m0;
#define BD_ACC(c, a, b) c = _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_xor_si512(a, b)))
    for (; mb + 32 <= m1; mb += 32) {
        __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
        __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        const uint64_t *b = Bt + mb;
        for (int k = 0; k < K; ++k, b += ldbt) {
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
        sink8(o, 0, j, all, c00); sink8(o, 0, j + 8, all, c01); sink8(o, 0, j + 16, all, c02);
        sink8(o, 0, j + 24, all, c03);
        sink8(o, 1, j, all, c10); sink8(o, 1, j + 8, all, c11); sink8(o, 1, j + 16, all, c12);
        sink8(o, 1, j + 24, all, c13);
        sink8(o, 2, j, all, c20); sink8(o, 2, j + 8, all, c21); sink8(o, 2, j + 16, all, c22);
        sink8(o, 2, j + 24, all, c23);
        sink8(o, 3, j, all, c30); sink8(o, 3, j + 8, all, c31); sink8(o, 3, j + 16, all, c32);
        sink8(o, 3, j + 24, all, c33);
    }
    for (; mb < m1; mb += 8) {
        __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
        const uint64_t *b = Bt + mb;
        for (int k = 0; k < K; ++k, b += ldbt) {
            const __m512i bv = _mm512_loadu_si512((const void *)b);
            BD_ACC(c0, _mm512_set1_epi64((long long)a0[k]), bv);
            BD_ACC(c1, _mm512_set1_epi64((long long)a1[k]), bv);
            BD_ACC(c2, _mm512_set1_epi64((long long)a2[k]), bv);
            BD_ACC(c3, _mm512_set1_epi64((long long)a3[k]), bv);
        }
        const int lanes = m1 - mb < 8 ? m1 - mb : 8;
        const __mmask8 keep = (__mmask8)((1u << lanes) - 1u);
        const int j = mb - m0;
        sink8(o, 0, j, keep, c0);
        sink8(o, 1, j, keep, c1);
        sink8(o, 2, j, keep, c2);
        sink8(o, 3, j, keep, c3);
    }
}

/* Few rows: vectorise along K (masked tail), 4 filters at a time sharing the row loads. */
static void bgemm_rows_k_avx512(int rows, int K, const uint64_t *A, long lda, const uint64_t *B, long ldb, int m0,
                                int m1, int32_t *counts, long ldc)
{
    const int full = K / 8;
    const __mmask8 tail = (__mmask8)((1u << (K % 8)) - 1u);
    for (int r = 0; r < rows; ++r) {
        const uint64_t *a = A + r * lda;
        int m = m0;
        for (; m + 4 <= m1; m += 4) {
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
            int32_t *o = counts + r * ldc + (m - m0);
            o[0] = (int32_t)_mm512_reduce_add_epi64(c0);
            o[1] = (int32_t)_mm512_reduce_add_epi64(c1);
            o[2] = (int32_t)_mm512_reduce_add_epi64(c2);
            o[3] = (int32_t)_mm512_reduce_add_epi64(c3);
        }
        if (m < m1) bd_bgemm_ref(1, K, a, lda, B, ldb, m, m1, counts + r * ldc + (m - m0), ldc);
    }
#undef BD_ACC
}
#endif /* BD_SIMD_AVX512 */

/* Transposed filters for the SIMD kernel: Bt[k][m] = B[m][k], columns padded to 8 with 0. */
static void transpose_words(const uint64_t *B, int M, int K, uint64_t *Bt, long ldbt, int bd_nt)
{
    /* 8 x 8 tiles: every store fills a whole 64-byte line of Bt (rows of Bt are often a
     * power of two apart, so a plain loop would keep evicting its own lines). */
    (void)bd_nt;
    BD_OMP_FOR_IF(ldbt * K > 8192)
    for (long m0 = 0; m0 < ldbt; m0 += 8) {
        for (int k0 = 0; k0 < K; k0 += 8) {
            uint64_t tile[8][8];
            const int kn = K - k0 < 8 ? K - k0 : 8;
            for (int i = 0; i < 8; ++i)
                for (int j = 0; j < 8; ++j) tile[j][i] = (m0 + i < M && j < kn) ? B[(m0 + i) * K + k0 + j] : 0;
            for (int j = 0; j < kn; ++j) memcpy(Bt + (long)(k0 + j) * ldbt + m0, tile[j], sizeof tile[j]);
        }
    }
}

static int uses_transposed(void)
{
#ifdef BD_SIMD_AVX512
    return 1;
#else
    return 0;
#endif
}

/* 4 rows (stride K) x channels m0..m1 of one filter group: counts[4][ldc]. */
static void bgemm_quad(const uint64_t *A, int K, const uint64_t *B, const uint64_t *Bt, long ldbt, int m0, int m1,
                       int32_t *counts, long ldc)
{
#ifdef BD_SIMD_AVX512
    if (Bt) {
        bd_sink o;
        memset(&o, 0, sizeof o);
        o.counts = counts;
        o.ldc = ldc;
        o.rows = BD_QUAD;
        bgemm4_bt_avx512(A, K, Bt, ldbt, m0, m1, &o);
        return;
    }
#else
    (void)Bt;
    (void)ldbt;
#endif
    bgemm4_rows(A, K, B, K, m0, m1, counts, ldc);
}

/* ---- output stores ------------------------------------------------------------------------- */

/* y[j] = base[j] + k2 * cnt[j] for j < len, narrowed to out_type (exact by construction). */
static void store_row(int out_type, void *y, long off, const int32_t *base, int k2, const int32_t *cnt, int len)
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

#ifdef BD_SIMD_AVX512
static size_t out_size(int out_type)
{
    return out_type == BD_I8 ? 1 : (out_type == BD_I16 ? 2 : 4);
}
#endif

static int bias_sign(const uint64_t *bias, int m)
{
    if (!bias) return 0;
    return ((bias[m >> 6] >> (m & 63)) & 1u) ? 1 : -1;
}

/* dst gets bits [off, off + nbits) of src, starting at bit 0; bits beyond nbits are 0. */
static void extract_bits(const uint64_t *src, long off, int nbits, uint64_t *dst)
{
    const int nw = BD_WORDS(nbits);
    const long ws = off >> 6;
    const int bs = (int)(off & 63);
    if (bs == 0) {
        memcpy(dst, src + ws, sizeof(uint64_t) * (size_t)nw);
    } else {
        for (int i = 0; i < nw; ++i) {
            uint64_t v = src[ws + i] >> bs;
            if ((ws + i + 1) * 64 < off + nbits) v |= src[ws + i + 1] << (64 - bs);
            dst[i] = v;
        }
    }
    if (nbits & 63) dst[nw - 1] &= (UINT64_C(1) << (nbits & 63)) - 1u;
}

/* ---- bconv2d ------------------------------------------------------------------------------- */

typedef struct {
    int Cg, Kw, taps, K, Mg, Mgp;
    size_t bt_bytes, tap_bytes, base_bytes, patch_bytes, count_bytes;
} conv_sizes;

static conv_sizes conv_sizes_of(const bd_bconv *g)
{
    conv_sizes s;
    s.Cg = g->C / g->groups;
    s.Kw = BD_WORDS(s.Cg);
    s.taps = g->kh * g->kw;
    s.K = s.taps * s.Kw;
    s.Mg = g->M / g->groups;
    s.Mgp = (int)round_up(s.Mg, 8);
    s.bt_bytes = BD_SCRATCH_ROUND(sizeof(uint64_t) * (size_t)g->groups * (size_t)s.K * (size_t)s.Mgp);
    s.tap_bytes = g->neutral ? BD_SCRATCH_ROUND(sizeof(int32_t) * (size_t)g->M * (size_t)s.taps) : 0;
    s.base_bytes = BD_SCRATCH_ROUND(sizeof(int32_t) * (size_t)g->M);
    s.patch_bytes = BD_SCRATCH_ROUND(sizeof(uint64_t) * (size_t)BD_CHUNK * (size_t)s.K);
    s.count_bytes = BD_SCRATCH_ROUND(sizeof(int32_t) * (size_t)BD_CHUNK * (size_t)s.Mgp);
    return s;
}

size_t bd_bconv2d_scratch(const bd_bconv *g)
{
    const conv_sizes s = conv_sizes_of(g);
    return s.bt_bytes + s.tap_bytes + s.base_bytes + (size_t)g->max_threads * (s.patch_bytes + s.count_bytes);
}

static void copy_words(uint64_t *dst, const uint64_t *src, int n)
{
    for (int i = 0; i < n; ++i) dst[i] = src[i];
}

/* One patch row (the receptive field of output pixel (b, oh, ow), group gi) in
 * [kh][kw][words] order; taps outside the input are 0 words (F bits), as pad_mode
 * "false" says (neutral mode corrects them later). */
static void patch_row(const bd_bconv *g, const conv_sizes *s, const uint64_t *img, int oh, int ow, int gi,
                      uint64_t *row)
{
    const int Cw = BD_WORDS(g->C), Kw = s->Kw;
    const int ih0 = oh * g->sh - g->pt, iw0 = ow * g->sw - g->pl;
    if (g->groups == 1 && g->dw == 1 && ih0 >= 0 && iw0 >= 0 && ih0 + (g->kh - 1) * g->dh < g->H &&
        iw0 + g->kw - 1 < g->W) {
        const int run = g->kw * Kw; /* interior: the kw taps of a kernel row are adjacent pixels */
        for (int i = 0; i < g->kh; ++i)
            copy_words(row + (long)i * run, img + ((long)(ih0 + i * g->dh) * g->W + iw0) * Cw, run);
        return;
    }
    for (int i = 0; i < g->kh; ++i) {
        const int ih = ih0 + i * g->dh;
        const int row_ok = ih >= 0 && ih < g->H;
        for (int j = 0; j < g->kw; ++j) {
            const int iw = iw0 + j * g->dw;
            uint64_t *dst = row + (long)(i * g->kw + j) * Kw;
            if (!row_ok || iw < 0 || iw >= g->W) {
                for (int k = 0; k < Kw; ++k) dst[k] = 0;
            } else {
                const uint64_t *px = img + ((long)ih * g->W + iw) * Cw;
                if (g->groups == 1) copy_words(dst, px, Kw);
                else extract_bits(px, (long)gi * s->Cg, s->Cg, dst);
            }
        }
    }
}

/* Patches of pixels p0..p0+rows-1 for group gi into P[BD_CHUNK][K]; rows beyond are 0. */
static void bconv_patches(const bd_bconv *g, const conv_sizes *s, const uint64_t *x, long p0, int rows, int gi,
                          uint64_t *P)
{
    const long image = (long)g->H * g->W * BD_WORDS(g->C);
    long b = p0 / ((long)g->OH * g->OW);
    int oh = (int)(p0 / g->OW % g->OH), ow = (int)(p0 % g->OW);
    for (int r = 0; r < BD_CHUNK; ++r) {
        uint64_t *row = P + (long)r * s->K;
        if (r >= rows) {
            memset(row, 0, sizeof(uint64_t) * (size_t)s->K);
            continue;
        }
        patch_row(g, s, x + b * image, oh, ow, gi, row);
        if (++ow == g->OW) {
            ow = 0;
            if (++oh == g->OH) {
                oh = 0;
                ++b;
            }
        }
    }
}

/* Neutral padding: the row's count without its padded taps, and its true fan-in. */
static int32_t neutral_fix(const bd_bconv *g, const conv_sizes *s, const int32_t *tapcount, long p, int m,
                           int32_t cnt, int *fan_in)
{
    const int oh = (int)(p / g->OW % g->OH), ow = (int)(p % g->OW);
    int valid = 0;
    for (int i = 0; i < g->kh; ++i) {
        const int ih = oh * g->sh - g->pt + i * g->dh;
        for (int j = 0; j < g->kw; ++j) {
            const int iw = ow * g->sw - g->pl + j * g->dw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) cnt -= tapcount[(long)m * s->taps + i * g->kw + j];
            else ++valid;
        }
    }
    *fan_in = valid * s->Cg;
    return cnt;
}

static int row_is_interior(const bd_bconv *g, long p)
{
    const int oh = (int)(p / g->OW % g->OH), ow = (int)(p % g->OW);
    const int ih0 = oh * g->sh - g->pt, iw0 = ow * g->sw - g->pl;
    return ih0 >= 0 && iw0 >= 0 && ih0 + (g->kh - 1) * g->dh < g->H && iw0 + (g->kw - 1) * g->dw < g->W;
}

void bd_bconv2d(const bd_bconv *g, const bd_exec *ex, const uint64_t *x, const uint64_t *w, const uint64_t *bias,
                void *y, unsigned char *scratch)
{
    const conv_sizes s = conv_sizes_of(g);
    uint64_t *Bt = uses_transposed() ? (uint64_t *)scratch : NULL;
    int32_t *tapcount = (int32_t *)(scratch + s.bt_bytes);
    int32_t *base = (int32_t *)(scratch + s.bt_bytes + s.tap_bytes);
    unsigned char *per_thread = scratch + s.bt_bytes + s.tap_bytes + s.base_bytes;
    const int full_fan_in = s.Cg * s.taps;
    const int k2 = -2 * g->sign;

    int bd_nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    if (bd_nt < 1) bd_nt = 1;
    if (Bt)
        for (int gi = 0; gi < g->groups; ++gi)
            transpose_words(w + (long)gi * s.Mg * s.K, s.Mg, s.K, Bt + (long)gi * s.K * s.Mgp, s.Mgp, bd_nt);
    for (int m = 0; m < g->M; ++m) {
        base[m] = g->sign * full_fan_in + bias_sign(bias, m);
        if (g->neutral)
            for (int t = 0; t < s.taps; ++t) {
                int c = 0;
                for (int k = 0; k < s.Kw; ++k) c += bd_popcount64(w[(long)m * s.K + (long)t * s.Kw + k]);
                tapcount[(long)m * s.taps + t] = c;
            }
    }

    const long pixels = (long)ex->n * g->OH * g->OW;
    const long chunks = (pixels + BD_CHUNK - 1) / BD_CHUNK;
    BD_OMP_FOR
    for (long ch = 0; ch < chunks; ++ch) {
        unsigned char *mine = per_thread + (size_t)bd_thread_id() * (s.patch_bytes + s.count_bytes);
        uint64_t *P = (uint64_t *)mine;
        int32_t *cnt = (int32_t *)(mine + s.patch_bytes);
        const long p0 = ch * BD_CHUNK;
        const int rows = pixels - p0 < BD_CHUNK ? (int)(pixels - p0) : BD_CHUNK;
        for (int gi = 0; gi < g->groups; ++gi) {
            bconv_patches(g, &s, x, p0, rows, gi, P);
            const uint64_t *Bg = w + (long)gi * s.Mg * s.K;
            const uint64_t *Btg = Bt ? Bt + (long)gi * s.K * s.Mgp : NULL;
#ifdef BD_SIMD_AVX512
            if (!g->neutral) { /* s straight from the registers to y */
                for (int r = 0; r < rows; r += BD_QUAD) {
                    bd_sink o;
                    o.counts = NULL;
                    o.ldc = 0;
                    o.y = (char *)y + ((p0 + r) * g->M + (long)gi * s.Mg) * out_size(g->out_type);
                    o.ldy = g->M;
                    o.out_type = g->out_type;
                    o.rows = rows - r < BD_QUAD ? rows - r : BD_QUAD;
                    o.base = base + gi * s.Mg;
                    o.negate = g->sign > 0;
                    bgemm4_bt_avx512(P + (long)r * s.K, s.K, Btg, s.Mgp, 0, s.Mg, &o);
                }
                continue;
            }
#endif
            for (int r = 0; r < rows; r += BD_QUAD)
                bgemm_quad(P + (long)r * s.K, s.K, Bg, Btg, s.Mgp, 0, s.Mg, cnt + (long)r * s.Mgp, s.Mgp);
            for (int r = 0; r < rows; ++r) {
                const long p = p0 + r;
                const long off = p * g->M + (long)gi * s.Mg;
                const int32_t *cr = cnt + (long)r * s.Mgp;
                if (!g->neutral || row_is_interior(g, p)) {
                    store_row(g->out_type, y, off, base + gi * s.Mg, k2, cr, s.Mg);
                    continue;
                }
                for (int j = 0; j < s.Mg; ++j) {
                    const int m = gi * s.Mg + j;
                    int fan_in;
                    const int32_t c = neutral_fix(g, &s, tapcount, p, m, cr[j], &fan_in);
                    const int32_t b = g->sign * fan_in + bias_sign(bias, m);
                    store_row(g->out_type, y, off + j, &b, k2, &c, 1);
                }
            }
        }
    }
}

/* ---- blinear --------------------------------------------------------------------------- */

typedef struct {
    int Kw, Mp;
    size_t bt_bytes, tail_bytes, base_bytes;
} lin_sizes;

static lin_sizes lin_sizes_of(const bd_blinear *g)
{
    lin_sizes s;
    s.Kw = BD_WORDS(g->K);
    s.Mp = (int)round_up(g->M, 8);
    s.bt_bytes = BD_SCRATCH_ROUND(sizeof(uint64_t) * (size_t)s.Kw * (size_t)s.Mp);
    s.tail_bytes = BD_SCRATCH_ROUND(sizeof(uint64_t) * BD_QUAD * (size_t)s.Kw);
    s.base_bytes = BD_SCRATCH_ROUND(sizeof(int32_t) * (size_t)g->M);
    return s;
}

size_t bd_blinear_scratch(const bd_blinear *g)
{
    const lin_sizes s = lin_sizes_of(g);
    return s.bt_bytes + s.tail_bytes + s.base_bytes;
}

void bd_blinear_run(const bd_blinear *g, const bd_exec *ex, long rows, const uint64_t *x, const uint64_t *w,
                    const uint64_t *bias, void *y, unsigned char *scratch)
{
    const lin_sizes s = lin_sizes_of(g);
    const int Kw = s.Kw;
    const int k2 = -2 * g->sign;
    uint64_t *tail = (uint64_t *)(scratch + s.bt_bytes);
    int32_t *base = (int32_t *)(scratch + s.bt_bytes + s.tail_bytes);
    const long quads = rows / BD_QUAD;
    const int rest = (int)(rows % BD_QUAD);
    const int transposed = uses_transposed() && quads > 0;
    uint64_t *Bt = transposed ? (uint64_t *)scratch : NULL;
    int bd_nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    if (bd_nt < 1) bd_nt = 1;

    for (int m = 0; m < g->M; ++m) base[m] = g->sign * g->K + bias_sign(bias, m);
    if (Bt) transpose_words(w, g->M, Kw, Bt, s.Mp, bd_nt);
    if (rest) {
        memset(tail, 0, sizeof(uint64_t) * BD_QUAD * (size_t)Kw);
        memcpy(tail, x + quads * BD_QUAD * Kw, sizeof(uint64_t) * (size_t)rest * (size_t)Kw);
    }
    const long mchunks = (g->M + BD_MCHUNK - 1) / BD_MCHUNK;
    BD_OMP_FOR
    for (long mc = 0; mc < mchunks; ++mc) {
        int32_t cnt[BD_QUAD * BD_MCHUNK];
        const int m0 = (int)(mc * BD_MCHUNK);
        const int m1 = m0 + BD_MCHUNK < g->M ? m0 + BD_MCHUNK : g->M;
        for (long q = 0; q <= quads; ++q) {
            const int nr = q < quads ? BD_QUAD : rest;
            if (nr == 0) break;
            const uint64_t *A = q < quads ? x + q * BD_QUAD * Kw : tail;
#ifdef BD_SIMD_AVX512
            if (Bt) { /* s straight from the registers to y */
                bd_sink o;
                o.counts = NULL;
                o.ldc = 0;
                o.y = (char *)y + (q * BD_QUAD * g->M + m0) * out_size(g->out_type);
                o.ldy = g->M;
                o.out_type = g->out_type;
                o.rows = nr;
                o.base = base + m0;
                o.negate = g->sign > 0;
                bgemm4_bt_avx512(A, Kw, Bt, s.Mp, m0, m1, &o);
                continue;
            }
            bgemm_rows_k_avx512(nr, Kw, A, Kw, w, Kw, m0, m1, cnt, BD_MCHUNK);
#else
            bgemm_quad(A, Kw, w, Bt, s.Mp, m0, m1, cnt, BD_MCHUNK);
#endif
            for (int r = 0; r < nr; ++r)
                store_row(g->out_type, y, (q * BD_QUAD + r) * g->M + m0, base + m0, k2, cnt + r * BD_MCHUNK,
                          m1 - m0);
        }
    }
}

/* ---- threshold ----------------------------------------------------------------------------- */

static inline int32_t load_int(const void *x, int x_type, long i)
{
    switch (x_type) {
    case BD_I8: return ((const int8_t *)x)[i];
    case BD_I16: return ((const int16_t *)x)[i];
    default: return ((const int32_t *)x)[i];
    }
}

void bd_threshold_int(const bd_exec *ex, const void *x, int x_type, long pixels, int C, const int32_t *t,
                      const uint8_t *le, uint64_t *y)
{
    const int Cw = BD_WORDS(C);
    const int bd_nt = ex->threads > 0 ? ex->threads : 1;
    (void)bd_nt;
    BD_OMP_FOR_IF(pixels * C > 32768)
    for (long p = 0; p < pixels; ++p) {
        const long xo = p * C;
        for (int wd = 0; wd < Cw; ++wd) {
            uint64_t word = 0;
            int c = wd * 64;
            const int end = C - c < 64 ? C - c : 64;
#ifdef BD_SIMD_AVX512
            if (x_type == BD_I16) {
                int b = 0;
                for (; b + 16 <= end; b += 16) {
                    const __m512i v = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)((const int16_t *)x + xo + c + b)));
                    const __m512i tv = _mm512_loadu_si512((const void *)(t + c + b));
                    const __m128i lv = _mm_loadu_si128((const __m128i *)(le + c + b));
                    const __mmask16 lm = _mm512_cmpneq_epi32_mask(_mm512_cvtepu8_epi32(lv), _mm512_setzero_si512());
                    const __mmask16 ge = _mm512_cmpge_epi32_mask(v, tv);
                    const __mmask16 lq = _mm512_cmple_epi32_mask(v, tv);
                    word |= (uint64_t)(uint16_t)((ge & (__mmask16)~lm) | (lq & lm)) << b;
                }
                for (; b < end; ++b) {
                    const int32_t v = ((const int16_t *)x)[xo + c + b];
                    const int bit = le[c + b] ? v <= t[c + b] : v >= t[c + b];
                    word |= (uint64_t)bit << b;
                }
                y[p * Cw + wd] = word;
                continue;
            }
#endif
            for (int b = 0; b < end; ++b) {
                const int32_t v = load_int(x, x_type, xo + c + b);
                const int bit = le[c + b] ? v <= t[c + b] : v >= t[c + b];
                word |= (uint64_t)bit << b;
            }
            y[p * Cw + wd] = word;
        }
    }
}

void bd_threshold_f32(const bd_exec *ex, const float *x, long pixels, int C, const float *t, const uint8_t *le,
                      uint64_t *y)
{
    const int Cw = BD_WORDS(C);
    const int bd_nt = ex->threads > 0 ? ex->threads : 1;
    (void)bd_nt;
    BD_OMP_FOR_IF(pixels * C > 32768)
    for (long p = 0; p < pixels; ++p) {
        const float *xp = x + p * C;
        for (int wd = 0; wd < Cw; ++wd) {
            uint64_t word = 0;
            const int c = wd * 64;
            const int end = C - c < 64 ? C - c : 64;
            int b = 0;
#ifdef BD_SIMD_AVX512
            for (; b + 16 <= end; b += 16) {
                const __m512 v = _mm512_loadu_ps(xp + c + b);
                const __m512 tv = _mm512_loadu_ps(t + c + b);
                const __m128i lv = _mm_loadu_si128((const __m128i *)(le + c + b));
                const __mmask16 lm = _mm512_cmpneq_epi32_mask(_mm512_cvtepu8_epi32(lv), _mm512_setzero_si512());
                const __mmask16 ge = _mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ);
                const __mmask16 lq = _mm512_cmp_ps_mask(v, tv, _CMP_LE_OQ);
                word |= (uint64_t)(uint16_t)((ge & (__mmask16)~lm) | (lq & lm)) << b;
            }
#endif
            for (; b < end; ++b) {
                const float v = xp[c + b];
                const int bit = le[c + b] ? v <= t[c + b] : v >= t[c + b];
                word |= (uint64_t)bit << b;
            }
            y[p * Cw + wd] = word;
        }
    }
}
