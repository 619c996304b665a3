/* spruce_dist.h: the processes of one run, behind one seam.
 *
 * Under `mpirun -np R` (spruce configured --with-mpi) a run is R processes,
 * the ranks 0..R-1; otherwise it is one process, rank 0 of 1, and every
 * function below is a no-op that succeeds.  Every collective must be called by
 * every rank in the same order.  Reductions have a fixed order (rank 0's share
 * + rank 1's, then + rank 2's, ...), so the same inputs on the same R give the
 * same bits on every rank and in every run.
 *
 * Errors: 0, SPRUCE_EIO naming the rank, the MPI call and MPI's message (the
 * ranks then cannot finish together: spruce_dist_finalize stops them all), or
 * SPRUCE_ENOMEM for a sum's segment buffer (agreed on by every rank). */
#ifndef SPRUCE_DIST_H
#define SPRUCE_DIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* MPI_Init when the process was started by an MPI launcher (mpirun sets
 * OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK); else nothing: one process. */
int spruce_dist_init(int *argc, char ***argv);
/* MPI_Finalize when spruce_dist_init initialised MPI. */
void spruce_dist_finalize(void);

int spruce_dist_rank(void);
int spruce_dist_size(void);
/* 1 when this build can run across processes (configured --with-mpi). */
int spruce_dist_available(void);

/* The contiguous share of n items that this rank takes: items [*first,
 * *first + *count); the first n mod R ranks take one more. */
void spruce_dist_share(int64_t n, int64_t *first, int64_t *count);

/* buf <- the sum over ranks of buf, n elements, in rank order. */
int spruce_dist_allreduce_sum(float *buf, size_t n);
int spruce_dist_allreduce_sum_f64(double *buf, size_t n);
int spruce_dist_allreduce_sum_i64(int64_t *buf, size_t n);

/* buf (bytes) <- root's buf. */
int spruce_dist_bcast(void *buf, size_t bytes, int root);

/* Every rank passes its status rc (0 = fine) and, in msg (cap bytes), what
 * went wrong.  Returns 0 on every rank when every rc was 0; otherwise the rc
 * of the lowest failing rank, whose msg every rank then holds prefixed with
 * "rank K of R: " (msg unchanged with one process). */
int spruce_dist_agree_msg(int rc, char *msg, size_t cap);
/* The same for library status codes: the message is spruce_errdetail(),
 * which every rank then holds. */
int spruce_dist_agree(int rc);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_DIST_H */
