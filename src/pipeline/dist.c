/* dist.c: the ranks of one run (see spruce_dist.h).  The only file that
 * includes mpi.h; without SPRUCE_HAVE_MPI a run is one process.
 *
 * The sums are a chain in rank order, segment by segment:
 *   rank 0 sends its segment to rank 1, rank r receives the partial sum of
 *   ranks 0..r-1, adds its own (acc + own) and sends it on; rank R-1 then
 *   holds the whole sum and broadcasts it.
 * Each link carries the buffer once, the segments pipeline the chain, and the
 * order of the additions never depends on timing or on MPI's algorithms. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "spruce_dist.h"

#ifdef SPRUCE_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;
#ifdef SPRUCE_HAVE_MPI
static int g_mpi = 0;    /* spruce_dist_init initialised MPI */
static int g_broken = 0; /* an agreement failed: the ranks cannot finish together */
#endif

int spruce_dist_rank(void) { return g_rank; }
int spruce_dist_size(void) { return g_size; }

void spruce_dist_share(int64_t n, int64_t *first, int64_t *count)
{
    int64_t base = n / g_size, rem = n % g_size;
    *count = base + (g_rank < rem);
    *first = g_rank * base + (g_rank < rem ? g_rank : rem);
}

#ifndef SPRUCE_HAVE_MPI

int spruce_dist_available(void) { return 0; }
int spruce_dist_init(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }
void spruce_dist_finalize(void) {}
int spruce_dist_allreduce_sum(float *buf, size_t n) { (void)buf; (void)n; return 0; }
int spruce_dist_allreduce_sum_f64(double *buf, size_t n) { (void)buf; (void)n; return 0; }
int spruce_dist_allreduce_sum_i64(int64_t *buf, size_t n) { (void)buf; (void)n; return 0; }
int spruce_dist_bcast(void *buf, size_t bytes, int root)
{
    (void)buf;
    (void)bytes;
    (void)root;
    return 0;
}
int spruce_dist_agree_msg(int rc, char *msg, size_t cap) { (void)msg; (void)cap; return rc; }
int spruce_dist_agree(int rc) { return rc; }

#else

/* Elements per message of a chain (4 MiB of floats) and bytes per broadcast
 * call (MPI counts are int). */
#define SEGMENT ((size_t)1 << 20)
#define BCAST_MAX ((size_t)1 << 30)

int spruce_dist_available(void) { return 1; }

static int mpi_err(int e, const char *call)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(e, s, &len) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error %d", e);
    g_broken = 1; /* the ranks may now wait for each other forever: see finalize */
    return spruce__seterr(SPRUCE_EIO, "rank %d of %d: %s: %s", g_rank, g_size, call, s);
}

int spruce_dist_init(int *argc, char ***argv)
{
    int e, provided;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK"))
        return 0; /* not started by an MPI launcher: one process */
    /* only the main thread calls MPI; OpenMP threads never do */
    if ((e = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)) != MPI_SUCCESS)
        return mpi_err(e, "MPI_Init_thread");
    g_mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return 0;
}

void spruce_dist_finalize(void)
{
    if (g_mpi && g_broken)
        MPI_Abort(MPI_COMM_WORLD, 1); /* the others may wait for this rank forever */
    if (g_mpi)
        MPI_Finalize();
    g_mpi = 0;
    g_rank = 0;
    g_size = 1;
}

int spruce_dist_bcast(void *buf, size_t bytes, int root)
{
    size_t off, n;
    int e;
    if (g_size == 1)
        return 0;
    for (off = 0; off < bytes; off += n) {
        n = bytes - off < BCAST_MAX ? bytes - off : BCAST_MAX;
        if ((e = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD)) !=
            MPI_SUCCESS)
            return mpi_err(e, "MPI_Bcast");
    }
    return 0;
}

typedef void (*add_fn)(void *acc, const void *own, size_t n);

/* acc[i] += own[i] for one element type */
#define ADD_FN(name, T)                                                                  \
    static void name(void *acc, const void *own, size_t n)                               \
    {                                                                                    \
        T *a = acc;                                                                      \
        const T *b = own;                                                                \
        size_t i;                                                                        \
        for (i = 0; i < n; i++)                                                          \
            a[i] += b[i];                                                                \
    }
ADD_FN(add_f32, float)
ADD_FN(add_f64, double)
ADD_FN(add_i64, int64_t)

/* buf (n elements of size bytes) <- sum over ranks, in rank order (see the
 * top of the file).  acc is one segment: the partial sum received. */
static int chain_sum(void *buf, size_t n, size_t size, add_fn add)
{
    size_t s, len, bytes;
    char *acc = NULL;
    int e, rc = 0;
    if (g_size == 1 || n == 0)
        return 0;
    if (g_rank > 0 && !(acc = malloc((n < SEGMENT ? n : SEGMENT) * size)))
        rc = spruce__seterr(SPRUCE_ENOMEM, "rank %d of %d: a reduction segment of %zu bytes",
                            g_rank, g_size, (n < SEGMENT ? n : SEGMENT) * size);
    /* a rank without its segment cannot take part: every rank learns it first */
    if ((rc = spruce_dist_agree(rc)))
        goto done;
    for (s = 0; s < n; s += len) {
        char *own = (char *)buf + s * size;
        len = n - s < SEGMENT ? n - s : SEGMENT;
        bytes = len * size;
        if (g_rank > 0) {
            if ((e = MPI_Recv(acc, (int)bytes, MPI_BYTE, g_rank - 1, 0, MPI_COMM_WORLD,
                              MPI_STATUS_IGNORE)) != MPI_SUCCESS) {
                rc = mpi_err(e, "MPI_Recv");
                goto done;
            }
            add(acc, own, len);      /* acc = (ranks 0..r-1) + rank r */
            memcpy(own, acc, bytes);
        }
        if (g_rank + 1 < g_size &&
            (e = MPI_Send(own, (int)bytes, MPI_BYTE, g_rank + 1, 0, MPI_COMM_WORLD)) !=
                MPI_SUCCESS) {
            rc = mpi_err(e, "MPI_Send");
            goto done;
        }
    }
    rc = spruce_dist_bcast(buf, n * size, g_size - 1);
done:
    free(acc);
    return rc;
}

int spruce_dist_allreduce_sum(float *buf, size_t n)
{
    return chain_sum(buf, n, sizeof *buf, add_f32);
}

int spruce_dist_allreduce_sum_f64(double *buf, size_t n)
{
    return chain_sum(buf, n, sizeof *buf, add_f64);
}

int spruce_dist_allreduce_sum_i64(int64_t *buf, size_t n)
{
    return chain_sum(buf, n, sizeof *buf, add_i64);
}

/* What a failing rank tells the others. */
typedef struct {
    int rc;
    char msg[1024];
} failure;

int spruce_dist_agree_msg(int rc, char *msg, size_t cap)
{
    int mine = rc ? g_rank : g_size, first = g_size, e;
    failure f;
    if (g_size == 1)
        return rc;
    if ((e = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD)) != MPI_SUCCESS) {
        rc = mpi_err(e, "MPI_Allreduce");
        if (msg && cap)
            snprintf(msg, cap, "%s", spruce_errdetail());
        return rc;
    }
    if (first == g_size)
        return 0;
    memset(&f, 0, sizeof f);
    if (g_rank == first) {
        f.rc = rc;
        snprintf(f.msg, sizeof f.msg, "rank %d of %d: %s", first, g_size, msg ? msg : "");
    }
    if ((e = MPI_Bcast(&f, (int)sizeof f, MPI_BYTE, first, MPI_COMM_WORLD)) != MPI_SUCCESS) {
        rc = mpi_err(e, "MPI_Bcast");
        if (msg && cap)
            snprintf(msg, cap, "%s", spruce_errdetail());
        return rc;
    }
    if (msg && cap)
        snprintf(msg, cap, "%s", f.msg);
    return f.rc;
}

int spruce_dist_agree(int rc)
{
    char msg[1024];
    int out;
    snprintf(msg, sizeof msg, "%s", rc ? spruce_errdetail() : "");
    out = spruce_dist_agree_msg(rc, msg, sizeof msg);
    if (out)
        spruce__seterr(out, "%s", msg);
    return out;
}

#endif /* SPRUCE_HAVE_MPI */
