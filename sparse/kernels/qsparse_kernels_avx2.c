/* qsparse_kernels_avx2.c: the AVX2+FMA kernels of the bf16, int8 and int4
 * bitmask and N:M matrices (compiled with the AVX2+FMA flags). */
#include <stdint.h>

#include "qsparse_internal.h"

uint8_t spruce__lut_qshuf[2][256][32] __attribute__((aligned(32)));

/* Lane j of slice m (bytes 4 j .. 4 j + 3, in the vector half j / 4, which
 * holds the 16 bytes from the slice's first value on) takes the value of rank
 * r = popcount(m & (2^j - 1)) into its top bytes when bit j is set: bf16
 * bytes 2 r, 2 r + 1 into bytes 2 and 3; int8 byte r into byte 3.  Every
 * other byte is 0x80 (a zero byte). */
static void lut_init(void)
{
    int m, j, b;
    for (m = 0; m < 256; m++) {
        int r = 0;
        for (j = 0; j < 8; j++) {
            uint8_t *bf = &spruce__lut_qshuf[0][m][4 * j], *i8 = &spruce__lut_qshuf[1][m][4 * j];
            for (b = 0; b < 4; b++)
                bf[b] = i8[b] = 0x80;
            if ((m >> j) & 1) {
                bf[2] = (uint8_t)(2 * r);
                bf[3] = (uint8_t)(2 * r + 1);
                i8[3] = (uint8_t)r;
                r++;
            }
        }
    }
}

void spruce__qskernels_avx2(spruce__qskernel_table *t)
{
    lut_init();
    t->k[SPRUCE_DT_BF16][0] = qsparse_spmv_bf16_avx2;
    t->k[SPRUCE_DT_INT8][0] = qsparse_spmv_int8_avx2;
    t->k[SPRUCE_DT_INT4][0] = qsparse_spmv_int4_avx2;
    t->k[SPRUCE_DT_BF16][1] = qsparse_spmm_avx2;
    t->k[SPRUCE_DT_INT8][1] = qsparse_spmm_avx2;
    t->k[SPRUCE_DT_INT4][1] = qsparse_spmm_avx2;
}
