/* The AMX integer tile of the runtime (runtime/bd_isa_amx.c, bd_isa_igemm_amx) alone: the
 * multiply-adds per second of its 16-row x 32-column calls over the k-block of the GEMM driver
 * (512 int16 or 1024 int8 values), an A block of 128 rows (L2) against one B panel (L1), the
 * way a weight gradient runs it. Compare bench/igemm_mask_vs_dot.c (the VNNI register tile).
 * Build and run (a CPU with AMX-INT8, Linux), from the checkout:
 *   cc -std=c99 -O3 -march=native -Iruntime bench/igemm_amx.c runtime/bd_isa_amx.c runtime/bd_util.c -lm
 *   ./a.out
 * Prints the best of five runs for int16 and int8 signals; "no AMX tiles" where they are refused.
 */
#include "bd_isa.h"

#include <stdio.h>

#define ROWS 128
#define REPS 3000

static unsigned char A[ROWS * 2 * 1024];
static int8_t B[1024 * BD_NR];
static int32_t C[ROWS * BD_NR];

static double rate(int i8)
{
    const int kp = i8 ? 1024 : 512;
    const long lda = i8 ? kp : 2 * kp;
    const int32_t bsum[BD_NR] = {0};
    double best = 0.0;
    for (int run = 0; run < 5; ++run) {
        const double t = bd_seconds();
        for (int it = 0; it < REPS; ++it)
            for (int r = 0; r < ROWS; r += 2 * BD_MR)
                bd_isa_igemm_amx(i8, kp, lda, A + (long)r * lda, B, bsum, C + r * BD_NR, BD_NR, 2 * BD_MR, BD_NR, 1);
        const double macs = (double)REPS * ROWS * BD_NR * kp, dt = bd_seconds() - t;
        best = macs / dt > best ? macs / dt : best;
    }
    return best;
}

int main(void)
{
    for (long i = 0; i < (long)sizeof A; ++i) A[i] = (unsigned char)(i * 7 + 3);
    for (long i = 0; i < (long)sizeof B; ++i) B[i] = (int8_t)(i * 13 % 3 - 1);
    if (!bd_isa_amx_ready()) {
        printf("no AMX tiles (%s)\n", bd_build_info());
        return 1;
    }
    printf("int16 signals: %.1f G multiply-adds/s\n", rate(0) / 1e9);
    printf("int8 signals:  %.1f G multiply-adds/s\n", rate(1) / 1e9);
    return 0;
}
