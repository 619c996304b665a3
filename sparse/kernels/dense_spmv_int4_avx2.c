/* dense_spmv_int4_avx2.c: y = W x for int4 weights with AVX2+FMA.
 * W is (rows, cols), two values per byte (column j in byte j / 2, bits
 * 4 (j % 2) upward), a scale s_ig and zero point z_ig per group g:
 *   y_i = sum_g s_ig sum_{j in g} (u_ij - z_ig) x_j.
 * Sixteen columns at a time: 8 bytes widen to 32-bit lanes whose low nibbles
 * are the even columns and high nibbles the odd ones (int4x16); x is split the
 * same way by a shuffle and a permute, shared by the four rows of a block.  A
 * group is a multiple of 32 columns, so each 16 lie in one group; the last
 * cols % 16 columns of a row (in the last group) are summed one by one. */
#include "qdense_avx2.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n16 = n & ~15, G = A->groupsize;
    const uint8_t *q[SPRUCE__QROWS];
    __m256 acc[SPRUCE__QROWS];
    int r, g, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        q[r] = A->q + (size_t)(i + r) * A->ld;
        acc[r] = _mm256_setzero_ps();
    }
    for (g = 0; g * G < n16; g++) {
        const int j1 = (g + 1) * G < n16 ? (g + 1) * G : n16;
        __m256 te[SPRUCE__QROWS], to[SPRUCE__QROWS];
        __m256i z[SPRUCE__QROWS];
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            te[r] = to[r] = _mm256_setzero_ps();
            z[r] = _mm256_set1_epi32(spruce__zero(A, i + r, g));
        }
        for (j = g * G; j < j1; j += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
            if (!(j & 127)) { /* the next block's line, as dense_spmv_int8_avx2.c */
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++)
                    _mm_prefetch((const char *)(q[r] + j / 2) + (size_t)SPRUCE__QROWS * A->ld,
                                 _MM_HINT_T1);
            }
            /* shuffle: columns 0 2 8 10 4 6 12 14 (odd: + 1); the permute orders them */
            const __m256 xe = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0x88)), 0xd8));
            const __m256 xo = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0xdd)), 0xd8));
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++) {
                __m256 we, wo;
                int4x16(q[r] + j / 2, z[r], &we, &wo);
                te[r] = _mm256_fmadd_ps(we, xe, te[r]);
                to[r] = _mm256_fmadd_ps(wo, xo, to[r]);
            }
        }
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_add_ps(te[r], to[r]),
                                     _mm256_set1_ps(A->scale[(size_t)(i + r) * A->ngroups + g]),
                                     acc[r]);
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        float s = hsum8(acc[r]), t = 0.0f;
        const int gl = n16 / G; /* the group of the last columns */
        for (j = n16; j < n; j++)
            t += ((float)spruce__nibble(q[r], j) - (float)spruce__zero(A, i + r, gl)) * x[j];
        if (n16 < n)
            s += A->scale[(size_t)(i + r) * A->ngroups + gl] * t;
        y[i + r] = s;
    }
}

void dense_spmv_int4_avx2(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                          int r1)
{
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
