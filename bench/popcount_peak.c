/* Peak popcount throughput of this machine (the roofline of bench/bench_layers.py).
 *
 * Prints two rates in 64-bit words per second:
 *  - "popcount": VPOPCNTQ on register-resident data, 8 independent chains (the most
 *    words any XNOR-popcount kernel can count per second: each word needs one popcount);
 *  - "xor_popcount_add": acc += popcount(a ^ b) streaming two arrays from L1 cache
 *    (the naive inner loop, for reference).
 * Build: cc -O2 -march=native popcount_peak.c (needs AVX-512 VPOPCNTDQ).
 */
#define _POSIX_C_SOURCE 199309L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void)
{
    static uint64_t a[512], b[512];
    for (int i = 0; i < 512; ++i) {
        a[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        b[i] = ~a[i] * 3u;
    }
    const long reps = 50000000;
    double best_pop = 1e30, best_stream = 1e30;
    __m512i x0 = _mm512_set1_epi64(1), x1 = _mm512_set1_epi64(2), x2 = _mm512_set1_epi64(3),
            x3 = _mm512_set1_epi64(4), x4 = _mm512_set1_epi64(5), x5 = _mm512_set1_epi64(6),
            x6 = _mm512_set1_epi64(7), x7 = _mm512_set1_epi64(8);
    __m512i acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_si512();
    for (int trial = 0; trial < 5; ++trial) {
        double t = now();
        for (long r = 0; r < reps; ++r) { /* 8 independent chains, kept in registers */
            x0 = _mm512_popcnt_epi64(x0);
            x1 = _mm512_popcnt_epi64(x1);
            x2 = _mm512_popcnt_epi64(x2);
            x3 = _mm512_popcnt_epi64(x3);
            x4 = _mm512_popcnt_epi64(x4);
            x5 = _mm512_popcnt_epi64(x5);
            x6 = _mm512_popcnt_epi64(x6);
            x7 = _mm512_popcnt_epi64(x7);
            __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5), "+v"(x6), "+v"(x7));
        }
        double dt = now() - t;
        if (dt < best_pop) best_pop = dt;
        t = now();
        for (long r = 0; r < reps / 64; ++r) {
            for (int k = 0; k < 512; k += 64)
                for (int j = 0; j < 8; ++j) {
                    const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(a + k + 8 * j),
                                                       _mm512_loadu_si512(b + k + 8 * j));
                    acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(v));
                }
            __asm__ volatile("" ::: "memory");
        }
        dt = now() - t;
        if (dt < best_stream) best_stream = dt;
    }
    long long sink = 0;
    const __m512i xs = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(x0, x1), _mm512_add_epi64(x2, x3)),
                                        _mm512_add_epi64(_mm512_add_epi64(x4, x5), _mm512_add_epi64(x6, x7)));
    for (int j = 0; j < 8; ++j) {
        long long v[8];
        _mm512_storeu_si512(v, _mm512_add_epi64(acc[j], xs));
        sink += v[0];
    }
    printf("popcount %.6g\nxor_popcount_add %.6g\nsink %lld\n", (double)reps * 64 / best_pop,
           (double)(reps / 64) * 512 / best_stream, sink);
    return 0;
}
