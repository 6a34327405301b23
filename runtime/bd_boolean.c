/* Boolean layers: XNOR/XOR-popcount convolution and linear layers, thresholds.
 *
 * The core is a "binary GEMM": counts[r][m] = popcount(A_r XOR B_m) summed over K
 * words, A the rows (input rows or im2col patches of one pixel each), B the filters.
 * The pre-activation is s = sign * (m - 2 * count) + e(bias) (docs/method.md §2), m the true
 * fan-in: padding bits are 0 in both operands, so XOR leaves them 0.
 *
 * This file is the driver (patches, filter layout, threads, neutral padding); the
 * micro-kernels are the ISA layer's (bd_isa.h): bd_isa_bgemm4 on 4 rows, bd_isa_bgemm_few
 * for a linear layer below 4 rows, the threshold packers. The filters are transposed
 * into scratch ([K][M], BD_BT_PAD-padded columns) when the ISA wants them so.
 */
#include "bd_isa.h"

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

/* Transposed filters: Bt[k][m] = B[m][k], columns padded to BD_BT_PAD with 0. */
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

/* A sink of `rows` rows of finished pre-activations at element off of y (rows ldy apart). */
static bd_bsink to_preacts(void *y, long off, long ldy, int out_type, int rows, const int32_t *base, int k2)
{
    bd_bsink o;
    memset(&o, 0, sizeof o);
    o.rows = rows;
    o.y = (char *)y + (size_t)off * bd_type_size(out_type);
    o.ldy = ldy;
    o.out_type = out_type;
    o.base = base;
    o.k2 = k2;
    return o;
}

/* A sink of `rows` rows of int32 counts (ldc apart). */
static bd_bsink to_counts(int32_t *counts, long ldc, int rows)
{
    bd_bsink o;
    memset(&o, 0, sizeof o);
    o.rows = rows;
    o.counts = counts;
    o.ldc = ldc;
    return o;
}

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
    s.Mgp = (int)round_up(s.Mg, BD_BT_PAD);
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
    uint64_t *Bt = BD_ISA_BGEMM_TRANSPOSED ? (uint64_t *)scratch : NULL;
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
            const uint64_t *Bg = Bt ? Bt + (long)gi * s.K * s.Mgp : w + (long)gi * s.Mg * s.K;
            const long ldb = Bt ? s.Mgp : s.K;
            if (!g->neutral) { /* s straight from the micro-kernel to y */
                for (int r = 0; r < rows; r += BD_QUAD) {
                    const bd_bsink o = to_preacts(y, (p0 + r) * g->M + (long)gi * s.Mg, g->M, g->out_type,
                                                  rows - r < BD_QUAD ? rows - r : BD_QUAD, base + gi * s.Mg, k2);
                    bd_isa_bgemm4(P + (long)r * s.K, s.K, Bg, ldb, 0, s.Mg, &o);
                }
                continue;
            }
            for (int r = 0; r < rows; r += BD_QUAD) {
                const bd_bsink o = to_counts(cnt + (long)r * s.Mgp, s.Mgp, rows - r < BD_QUAD ? rows - r : BD_QUAD);
                bd_isa_bgemm4(P + (long)r * s.K, s.K, Bg, ldb, 0, s.Mg, &o);
            }
            for (int r = 0; r < rows; ++r) {
                const long p = p0 + r;
                const long off = p * g->M + (long)gi * s.Mg;
                const int32_t *cr = cnt + (long)r * s.Mgp;
                if (row_is_interior(g, p)) {
                    bd_store_preact(g->out_type, y, off, base + gi * s.Mg, k2, cr, s.Mg);
                    continue;
                }
                for (int j = 0; j < s.Mg; ++j) {
                    const int m = gi * s.Mg + j;
                    int fan_in;
                    const int32_t c = neutral_fix(g, &s, tapcount, p, m, cr[j], &fan_in);
                    const int32_t b = g->sign * fan_in + bias_sign(bias, m);
                    bd_store_preact(g->out_type, y, off + j, &b, k2, &c, 1);
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
    s.Mp = (int)round_up(g->M, BD_BT_PAD);
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
    const int transposed = BD_ISA_BGEMM_TRANSPOSED && quads > 0;
    uint64_t *Bt = transposed ? (uint64_t *)scratch : NULL;
    int bd_nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    if (bd_nt < 1) bd_nt = 1;

    for (int m = 0; m < g->M; ++m) base[m] = g->sign * g->K + bias_sign(bias, m);
    if (Bt) transpose_words(w, g->M, Kw, Bt, s.Mp, bd_nt);
    if (rest && quads > 0) { /* the last rows, padded to a quad (fewer rows alone go to bgemm_few) */
        memset(tail, 0, sizeof(uint64_t) * BD_QUAD * (size_t)Kw);
        memcpy(tail, x + quads * BD_QUAD * Kw, sizeof(uint64_t) * (size_t)rest * (size_t)Kw);
    }
    const long mchunks = (g->M + BD_MCHUNK - 1) / BD_MCHUNK;
    BD_OMP_FOR
    for (long mc = 0; mc < mchunks; ++mc) {
        const int m0 = (int)(mc * BD_MCHUNK);
        const int m1 = m0 + BD_MCHUNK < g->M ? m0 + BD_MCHUNK : g->M;
        for (long q = 0; q <= quads; ++q) {
            const int nr = q < quads ? BD_QUAD : rest;
            if (nr == 0) break;
            const bd_bsink o = to_preacts(y, q * BD_QUAD * g->M + m0, g->M, g->out_type, nr, base + m0, k2);
            if (quads == 0) bd_isa_bgemm_few(x, Kw, w, Kw, m0, m1, &o);
            else bd_isa_bgemm4(q < quads ? x + q * BD_QUAD * Kw : tail, Kw, Bt ? Bt : w, Bt ? s.Mp : Kw, m0, m1, &o);
        }
    }
}

/* ---- threshold ----------------------------------------------------------------------------- */

#define BD_TCHUNK 16 /* pixels per packer call */

void bd_threshold_int(const bd_exec *ex, const void *x, int x_type, long pixels, int C, const int32_t *t,
                      const uint8_t *le, uint64_t *y)
{
    const size_t chunk_bytes = (size_t)BD_TCHUNK * (size_t)C * bd_type_size(x_type);
    const long chunks = (pixels + BD_TCHUNK - 1) / BD_TCHUNK;
    const int bd_nt = ex->threads > 0 ? ex->threads : 1;
    (void)bd_nt;
    BD_OMP_FOR_IF(pixels * C > 32768)
    for (long ch = 0; ch < chunks; ++ch) {
        const long p0 = ch * BD_TCHUNK;
        bd_isa_threshold_int((const char *)x + (size_t)ch * chunk_bytes, x_type,
                             pixels - p0 < BD_TCHUNK ? pixels - p0 : BD_TCHUNK, C, t, le, y + p0 * BD_WORDS(C));
    }
}

void bd_threshold_f32(const bd_exec *ex, const float *x, long pixels, int C, const float *t, const uint8_t *le,
                      uint64_t *y)
{
    const long chunks = (pixels + BD_TCHUNK - 1) / BD_TCHUNK;
    const int bd_nt = ex->threads > 0 ? ex->threads : 1;
    (void)bd_nt;
    BD_OMP_FOR_IF(pixels * C > 32768)
    for (long ch = 0; ch < chunks; ++ch) {
        const long p0 = ch * BD_TCHUNK;
        bd_isa_threshold_f32(x + p0 * C, pixels - p0 < BD_TCHUNK ? pixels - p0 : BD_TCHUNK, C, t, le,
                             y + p0 * BD_WORDS(C));
    }
}
