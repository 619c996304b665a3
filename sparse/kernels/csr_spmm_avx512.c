/* csr_spmm_avx512.c: Y = A X for compressed rows with AVX-512.
 * A is (rows, cols) in CSR, X is (cols, batch), Y is (rows, batch), row-major.
 * Row i, columns j0 .. j0 + 64 of Y at a time (up to four vectors):
 *   Y[i, j0 ..] = sum over p in row i of val[p] * X[idx[p], j0 ..]
 * (spmm_avx512.h: one broadcast weight against a contiguous row of X). */
#include "sparse_internal.h"
#include "spmm_avx512.h"

void csr_spmm_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                     int r1)
{
    int i, j0, q;
    for (j0 = 0; j0 < batch; j0 += 64) {
        const int nb = batch - j0 < 64 ? batch - j0 : 64, nv = (nb + 15) / 16;
        const __mmask16 tail = nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
        for (i = r0; i < r1; i++) {
            const int64_t p0 = A->rowptr[i], cnt = A->rowptr[i + 1] - p0;
            float *y = Y + (int64_t)i * batch + j0;
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                             _mm512_setzero_ps()};
            if (A->idx_bits == 16)
                spmm_acc512_nv(A->val + p0, A->idx16 + p0, cnt, X + j0, batch, tail, acc, nv, 16);
            else
                spmm_acc512_nv(A->val + p0, A->idx32 + p0, cnt, X + j0, batch, tail, acc, nv, 32);
            for (q = 0; q < nv; q++)
                _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? tail : 0xffff, acc[q]);
        }
    }
}
