/* Why the integer-signal gradients expand e = +-1 into int16 panels instead of working on the
 * 0/1 bits (docs/training.md, "Speed and memory"): the register tile of runtime/bd_isa_avx512.c
 * (8 rows x 32 int32 columns) computed two ways, from L1-resident operands.
 *  - "mask-add": e(x) * z = 2 [x] z - z, so acc += z under the mask of the bits (one masked
 *    vpaddd per 16 products; the -z part is one sum per row, not counted here);
 *  - "vpdpwssd": acc += a pair of int16 signals times a pair of expanded int16 e (one
 *    instruction per 32 products), the kernel boldc uses (vpdpbusd does 64 for int8).
 * Build (a CPU with AVX-512 VNNI): cc -O3 -march=native bench/igemm_mask_vs_dot.c; run: ./a.out
 * Prints the multiply-adds per second of each, three times.
 */
#define _POSIX_C_SOURCE 199309L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KC 512
#define REPS 20000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

__attribute__((noinline)) static void mask_add(const int32_t *A, const uint32_t *bits, int32_t *out)
{
    __m512i c0[8], c1[8];
    for (int r = 0; r < 8; ++r) c0[r] = c1[r] = _mm512_setzero_si512();
    for (int k = 0; k < KC; ++k) {
        const __mmask16 m0 = (__mmask16)bits[k], m1 = (__mmask16)(bits[k] >> 16);
        for (int r = 0; r < 8; ++r) {
            const __m512i z = _mm512_set1_epi32(A[k * 8 + r]);
            c0[r] = _mm512_mask_add_epi32(c0[r], m0, c0[r], z);
            c1[r] = _mm512_mask_add_epi32(c1[r], m1, c1[r], z);
        }
    }
    for (int r = 0; r < 8; ++r) {
        _mm512_storeu_si512(out + 32 * r, c0[r]);
        _mm512_storeu_si512(out + 32 * r + 16, c1[r]);
    }
}

__attribute__((noinline)) static void dot_pairs(const int32_t *A, const int32_t *B, int32_t *out)
{
    __m512i c0[8], c1[8];
    for (int r = 0; r < 8; ++r) c0[r] = c1[r] = _mm512_setzero_si512();
    for (int q = 0; q < KC / 2; ++q) {
        const __m512i b0 = _mm512_loadu_si512(B + 32 * q), b1 = _mm512_loadu_si512(B + 32 * q + 16);
        for (int r = 0; r < 8; ++r) {
            const __m512i a = _mm512_set1_epi32(A[q * 8 + r]);
            c0[r] = _mm512_dpwssd_epi32(c0[r], a, b0);
            c1[r] = _mm512_dpwssd_epi32(c1[r], a, b1);
        }
    }
    for (int r = 0; r < 8; ++r) {
        _mm512_storeu_si512(out + 32 * r, c0[r]);
        _mm512_storeu_si512(out + 32 * r + 16, c1[r]);
    }
}

int main(void)
{
    static int32_t A[KC * 8], B[KC * 16], out[256];
    static uint32_t bits[KC];
    for (int i = 0; i < KC * 8; ++i) A[i] = rand();
    for (int i = 0; i < KC * 16; ++i) B[i] = rand();
    for (int i = 0; i < KC; ++i) bits[i] = (uint32_t)rand();
    long long sink = 0;
    const double macs = 256.0 * KC * REPS;
    for (int trial = 0; trial < 3; ++trial) {
        double t = now();
        for (int r = 0; r < REPS; ++r) {
            mask_add(A, bits, out);
            sink += out[r & 255];
        }
        const double t_mask = now() - t;
        t = now();
        for (int r = 0; r < REPS; ++r) {
            dot_pairs(A, B, out);
            sink += out[r & 255];
        }
        const double t_dot = now() - t;
        printf("mask-add %.1f G/s, vpdpwssd %.1f G/s multiply-adds (%lld)\n", macs / t_mask / 1e9,
               macs / t_dot / 1e9, sink & 1);
    }
    return 0;
}
