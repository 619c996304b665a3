/* test_allocfail.c: every out-of-memory exit, walked as CSparse does.
 *
 * For N = 1, 2, ... the Nth allocation made by spruce's own code fails, until
 * the operation succeeds without reaching the Nth: the pruner (each method,
 * and the shared-factor path), the checkpoint reader, the checkpoint writer,
 * the mask writer, token files, .npy, and the pipeline on a tiny synthetic
 * model.  Each failing run must return a negative SPRUCE_E* code with a
 * message, publish nothing, and leave none of spruce's allocations alive.
 *
 * This program defines malloc, calloc, realloc, free and the aligned
 * allocators, forwarding to glibc's own (__libc_malloc ...), as
 * test_sparse_noalloc does.  An allocation is spruce's when its return
 * address lies in one of the libspruce*.so libraries (found once with
 * dl_iterate_phdr): allocations made inside OpenBLAS, HDF5, jansson, libgomp
 * or the C library (strdup, fopen) are neither failed nor counted.  Every
 * pointer spruce allocates is remembered with its caller until it is freed,
 * so that a leak names the function that allocated it.
 *
 * AddressSanitizer supplies malloc itself; under it the interposer is not
 * built and the tests skip, saying so. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ckpt_testutil.h"
#include "npy.h"
#include "spruce_masks.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"
#include "spruce_prune.h"
#include "spruce_tokens.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* ---- the interposer ---------------------------------------------------------- */

#define MAX_RANGES 32
#define LIVE_SLOTS (1 << 16)

static struct {
    uintptr_t lo, hi;
} ranges[MAX_RANGES];
static int nranges;

static atomic_int armed;   /* failing and tracking on */
static atomic_long seen;   /* spruce's allocations since arming */
static long fail_at;       /* the one to fail (1-based) */
static atomic_int failed;  /* it was reached */
static void *failed_caller; /* by whom */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *p;
    void *caller;
} live[LIVE_SLOTS];
static long nlive;

static int ours(const void *ret)
{
    uintptr_t a = (uintptr_t)ret;
    int i;
    for (i = 0; i < nranges; i++)
        if (a >= ranges[i].lo && a < ranges[i].hi)
            return 1;
    return 0;
}

static size_t slot_of(const void *p) { return ((uintptr_t)p >> 4) * 2654435761u % LIVE_SLOTS; }

static void live_add(void *p, void *caller)
{
    size_t s;
    pthread_mutex_lock(&live_lock);
    for (s = slot_of(p); live[s].p; s = (s + 1) % LIVE_SLOTS)
        ;
    live[s].p = p;
    live[s].caller = caller;
    nlive++;
    pthread_mutex_unlock(&live_lock);
}

static void live_remove(void *p)
{
    size_t s, t;
    pthread_mutex_lock(&live_lock);
    for (s = slot_of(p); live[s].p && live[s].p != p; s = (s + 1) % LIVE_SLOTS)
        ;
    if (live[s].p) {
        /* delete from the linear-probing table: move later entries back */
        live[s].p = NULL;
        nlive--;
        for (t = (s + 1) % LIVE_SLOTS; live[t].p; t = (t + 1) % LIVE_SLOTS) {
            size_t h = slot_of(live[t].p);
            if ((t > s && (h <= s || h > t)) || (t < s && h <= s && h > t)) {
                live[s] = live[t];
                live[t].p = NULL;
                s = t;
            }
        }
    }
    pthread_mutex_unlock(&live_lock);
}

/* 1 when this allocation (by caller) is to fail. */
static int should_fail(void *caller)
{
    long k;
    if (!atomic_load_explicit(&armed, memory_order_relaxed) || !ours(caller))
        return 0;
    k = atomic_fetch_add(&seen, 1) + 1;
    if (k == fail_at) {
        failed_caller = caller;
        atomic_store(&failed, 1);
        return 1;
    }
    return 0;
}

static void track(void *p, void *caller)
{
    if (p && atomic_load_explicit(&armed, memory_order_relaxed) && ours(caller))
        live_add(p, caller);
}

#ifndef UNDER_ASAN
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (should_fail(c)) {
        errno = ENOMEM;
        return NULL;
    }
    p = __libc_malloc(size);
    track(p, c);
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (should_fail(c)) {
        errno = ENOMEM;
        return NULL;
    }
    p = __libc_calloc(n, size);
    track(p, c);
    return p;
}

void *realloc(void *old, size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (should_fail(c)) {
        errno = ENOMEM;
        return NULL;
    }
    p = __libc_realloc(old, size);
    if (p && old && atomic_load_explicit(&armed, memory_order_relaxed))
        live_remove(old);
    track(p, c);
    return p;
}

void free(void *p)
{
    if (p && atomic_load_explicit(&armed, memory_order_relaxed))
        live_remove(p);
    __libc_free(p);
}

void *aligned_alloc(size_t align, size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (should_fail(c)) {
        errno = ENOMEM;
        return NULL;
    }
    p = __libc_memalign(align, size);
    track(p, c);
    return p;
}

void *memalign(size_t align, size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (should_fail(c)) {
        errno = ENOMEM;
        return NULL;
    }
    p = __libc_memalign(align, size);
    track(p, c);
    return p;
}

int posix_memalign(void **out, size_t align, size_t size)
{
    void *c = __builtin_return_address(0), *p;
    if (align % sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    if (should_fail(c))
        return ENOMEM;
    if (!(p = __libc_memalign(align, size)) && size)
        return ENOMEM;
    track(p, c);
    *out = p;
    return 0;
}
#endif

static int find_ranges(struct dl_phdr_info *info, size_t sz, void *data)
{
    int i;
    (void)sz;
    (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "libspruce"))
        return 0;
    for (i = 0; i < info->dlpi_phnum && nranges < MAX_RANGES; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD && (info->dlpi_phdr[i].p_flags & PF_X)) {
            ranges[nranges].lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            ranges[nranges].hi = ranges[nranges].lo + info->dlpi_phdr[i].p_memsz;
            nranges++;
        }
    return 0;
}

static void init(void)
{
#ifdef UNDER_ASAN
    cr_skip_test("built with AddressSanitizer, which owns malloc: the allocation-failure walk needs "
                 "the normal build");
#endif
    if (!nranges)
        dl_iterate_phdr(find_ranges, NULL);
    if (!nranges)
        cr_skip_test("spruce is linked statically: its allocations cannot be told from the others'");
}

/* The function that allocated a leaked pointer, for the message. */
static const char *where(void *caller)
{
    Dl_info d;
    return dladdr(caller, &d) && d.dli_sname ? d.dli_sname : "?";
}

/* ---- the walk ------------------------------------------------------------------- */

/* op runs the operation and releases whatever it made; it returns its status.
 * check (may be NULL) asserts after a failed run that nothing was published.
 * complete (may be NULL) says whether a successful run's result is whole: an
 * operation may survive a failed allocation in a best-effort step (the mask
 * writer's fsync of the directory after the rename) only if its result is. */
typedef int (*op_fn)(void *ctx);
typedef void (*check_fn)(void *ctx);
typedef int (*complete_fn)(void *ctx);

static void walk_full(const char *what, op_fn op, check_fn check, complete_fn complete, void *ctx)
{
    long n;
    int rc;
    /* once unarmed: one-time set-up (OpenMP, OpenBLAS, dispatch tables) */
    rc = op(ctx);
    cr_assert_eq(rc, 0, "%s: %s", what, spruce_errdetail());
    for (n = 1; n < 100000; n++) {
        long i;
        fail_at = n;
        atomic_store(&seen, 0);
        atomic_store(&failed, 0);
        nlive = 0;
        spruce_errclear();
        atomic_store(&armed, 1);
        rc = op(ctx);
        atomic_store(&armed, 0);
        if (nlive) {
            for (i = 0; i < LIVE_SLOTS; i++)
                if (live[i].p)
                    break;
            cr_assert_fail("%s: allocation %ld failed (rc %d): %ld of spruce's allocations leaked, "
                           "one made in %s",
                           what, n, rc, nlive, where(live[i].caller));
        }
        if (!atomic_load(&failed)) {
            cr_assert_eq(rc, 0, "%s: no allocation failed but the run returned %d: %s", what, rc,
                         spruce_errdetail());
            cr_log_info("%s: %ld allocations, each failed once", what, n - 1);
            return;
        }
        if (rc == 0 && complete && complete(ctx)) {
            cr_log_info("%s: allocation %ld (in %s) failed in a best-effort step; the result is whole",
                        what, n, where(failed_caller));
            continue;
        }
        cr_assert(rc < 0, "%s: allocation %ld (in %s) failed but the run returned %d", what, n,
                  where(failed_caller), rc);
        cr_assert(spruce_errdetail()[0] != '\0', "%s: allocation %ld (in %s) failed without a message",
                  what, n, where(failed_caller));
        if (check)
            check(ctx);
    }
    cr_assert_fail("%s: more than %ld allocations", what, n);
}

static void walk(const char *what, op_fn op, check_fn check, void *ctx)
{
    walk_full(what, op, check, NULL, ctx);
}

/* ---- the pruner -------------------------------------------------------------------- */

typedef struct {
    float *X, *W0, *W;
    uint8_t *mask;
    int rows, cols, tokens;
    spruce_method method;
    int pn, pm, prepared;
} prune_ctx;

static int prune_op(void *v)
{
    prune_ctx *c = v;
    spruce_prune_opts o;
    spruce_prune_result r;
    spruce_hessian *h;
    spruce_hinv *hi = NULL;
    int rc;
    spruce_prune_opts_init(&o);
    o.method = c->method;
    o.sparsity = 0.5f;
    o.prune_n = c->pn;
    o.prune_m = c->pm;
    o.blocksize = 32;
    o.threads = 1;
    memcpy(c->W, c->W0, (size_t)c->rows * c->cols * sizeof *c->W);
    if (!(h = spruce_hessian_alloc(c->cols)))
        return spruce__seterr(SPRUCE_ENOMEM, "hessian");
    if ((rc = spruce_hessian_add(h, c->X, c->tokens)))
        goto done;
    if (c->prepared) {
        if ((rc = spruce_hinv_prepare(h, &o, &hi)))
            goto done;
        rc = spruce_prune_layer_prepared(c->W, c->rows, c->cols, hi, &o, c->mask, &r);
    } else {
        rc = spruce_prune_layer(c->W, c->rows, c->cols, h, &o, c->mask, &r);
    }
done:
    spruce_hinv_free(hi);
    spruce_hessian_free(h);
    return rc;
}

static void prune_walk(spruce_method m, int pn, int pm, int prepared)
{
    prune_ctx c = {0};
    char what[64];
    size_t i;
    init();
    c.rows = 12;
    c.cols = 64;
    c.tokens = 40;
    c.method = m;
    c.pn = pn;
    c.pm = pm;
    c.prepared = prepared;
    c.X = malloc((size_t)c.tokens * c.cols * sizeof *c.X);
    c.W0 = malloc((size_t)c.rows * c.cols * sizeof *c.W0);
    c.W = malloc((size_t)c.rows * c.cols * sizeof *c.W);
    c.mask = malloc((size_t)c.rows * c.cols);
    for (i = 0; i < (size_t)c.tokens * c.cols; i++)
        c.X[i] = (float)((i * 7919) % 23) / 11.0f - 1.0f;
    for (i = 0; i < (size_t)c.rows * c.cols; i++)
        c.W0[i] = (float)((i * 104729) % 31) / 15.0f - 1.0f;
    snprintf(what, sizeof what, "%s%s%s", spruce_method_name(m), pm ? " 2:4" : "",
             prepared ? " (prepared)" : "");
    walk(what, prune_op, NULL, &c);
    free(c.X);
    free(c.W0);
    free(c.W);
    free(c.mask);
}

Test(allocfail, sparsegpt) { prune_walk(SPRUCE_METHOD_SPARSEGPT, 0, 0, 0); }
Test(allocfail, sparsegpt_2_4) { prune_walk(SPRUCE_METHOD_SPARSEGPT, 2, 4, 0); }
Test(allocfail, sparsegpt_prepared) { prune_walk(SPRUCE_METHOD_SPARSEGPT, 0, 0, 1); }
Test(allocfail, wanda) { prune_walk(SPRUCE_METHOD_WANDA, 0, 0, 0); }
Test(allocfail, wanda_2_4) { prune_walk(SPRUCE_METHOD_WANDA, 2, 4, 0); }
Test(allocfail, magnitude) { prune_walk(SPRUCE_METHOD_MAGNITUDE, 0, 0, 0); }

/* ---- checkpoints, masks, token files, .npy ------------------------------------------ */

typedef struct {
    char *dir, *in, *out, *file;
} io_ctx;

static io_ctx io;

static void io_setup(void)
{
    spruce_synth_config cfg = small_cfg(SPRUCE_DTYPE_BF16);
    io.dir = mktmp();
    io.in = path2(io.dir, "in");
    io.out = path2(io.dir, "out");
    io.file = NULL;
    cr_assert_eq(spruce_synth_write(io.in, &cfg, 0), 0, "%s", spruce_errdetail());
}

static void io_teardown(void)
{
    rmrf(io.dir);
    free(io.dir);
    free(io.in);
    free(io.out);
    free(io.file);
}

static int ckpt_read_op(void *v)
{
    io_ctx *c = v;
    spruce_ckpt *ck;
    float *buf = NULL;
    int rc, i;
    if ((rc = spruce_ckpt_open(c->in, &ck)))
        return rc;
    for (i = 0; i < spruce_ckpt_count(ck) && !rc; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        float *nb = realloc(buf, (size_t)spruce_tensor_numel(t) * sizeof *buf);
        if (!nb) {
            rc = SPRUCE_ENOMEM;
            break;
        }
        buf = nb;
        rc = spruce_tensor_read_f32(t, buf);
    }
    free(buf);
    spruce_ckpt_close(ck);
    return rc;
}

Test(allocfail, checkpoint_reader, .init = io_setup, .fini = io_teardown)
{
    init();
    walk("spruce_ckpt_open", ckpt_read_op, NULL, &io);
}

static int ckpt_write_op(void *v)
{
    io_ctx *c = v;
    spruce_ckpt *ck;
    spruce_ckpt_writer *w = NULL;
    float *buf = NULL;
    int rc, i;
    rmrf(c->out);
    if ((rc = spruce_ckpt_open(c->in, &ck)))
        return rc;
    if ((rc = spruce_ckpt_writer_begin(ck, c->out, 0, &w)))
        goto done;
    for (i = 0; i < spruce_ckpt_count(ck) && !rc; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        float *nb = realloc(buf, (size_t)spruce_tensor_numel(t) * sizeof *buf);
        if (!nb) {
            rc = SPRUCE_ENOMEM;
            break;
        }
        buf = nb;
        if (!(rc = spruce_tensor_read_f32(t, buf)))
            rc = spruce_ckpt_writer_set_f32(w, spruce_ckpt_tensor_at(ck, i)->name, buf);
    }
    if (rc)
        spruce_ckpt_writer_abort(w);
    else
        rc = spruce_ckpt_writer_commit(w);
done:
    free(buf);
    spruce_ckpt_close(ck);
    return rc;
}

/* A failed write publishes nothing and leaves no temporary beside it. */
static void ckpt_write_check(void *v)
{
    io_ctx *c = v;
    cr_assert_not(exists(c->out), "%s exists after a failed write", c->out);
    cr_assert_eq(count_entries_with(c->dir, ".tmp"), 0, "a temporary was left in %s", c->dir);
}

Test(allocfail, checkpoint_writer, .init = io_setup, .fini = io_teardown)
{
    init();
    walk("spruce_ckpt_writer", ckpt_write_op, ckpt_write_check, &io);
}

static int maskfile_op(void *v)
{
    io_ctx *c = v;
    spruce_maskfile *f;
    uint8_t keep[4 * 8];
    spruce_mask_info info = {"2:4", "sparsegpt", -1.0, 0.25, 1};
    int rc, i;
    for (i = 0; i < 32; i++)
        keep[i] = (uint8_t)(i % 4 < 2);
    unlink(c->file);
    if ((rc = spruce_maskfile_create(c->file, &f)))
        return rc;
    if ((rc = spruce_maskfile_set_attr_string(f, "model", "in")) ||
        (rc = spruce_maskfile_set_attr_double(f, "sparsity", 0.5)) ||
        (rc = spruce_maskfile_set_attr_int(f, "layers", 1)) ||
        (rc = spruce_maskfile_write(f, "a.weight", 4, 8, keep, &info)) ||
        (rc = spruce_maskfile_write(f, "b.weight", 8, 4, keep, NULL))) {
        spruce_maskfile_abort(f);
        return rc;
    }
    return spruce_maskfile_commit(f);
}

static void maskfile_check(void *v)
{
    io_ctx *c = v;
    cr_assert_not(exists(c->file), "%s exists after a failed write", c->file);
    cr_assert_eq(count_entries_with(c->dir, ".tmp"), 0, "a temporary was left in %s", c->dir);
}

/* The committed file holds both masks and no temporary is left. */
static int maskfile_complete(void *v)
{
    io_ctx *c = v;
    spruce_maskreader *r;
    int n;
    if (spruce_maskreader_open(c->file, &r))
        return 0;
    n = spruce_maskreader_count(r);
    spruce_maskreader_close(r);
    return n == 2 && count_entries_with(c->dir, ".tmp") == 0;
}

Test(allocfail, mask_writer, .init = io_setup, .fini = io_teardown)
{
    init();
    io.file = path2(io.dir, "m.h5");
    walk_full("spruce_maskfile", maskfile_op, maskfile_check, maskfile_complete, &io);
}

static int tokens_op(void *v)
{
    io_ctx *c = v;
    uint32_t *ids;
    size_t n;
    int rc = spruce_tokens_load(c->file, &ids, &n);
    if (!rc)
        free(ids);
    return rc;
}

Test(allocfail, token_files, .init = io_setup, .fini = io_teardown)
{
    uint32_t ids[300];
    int i;
    init();
    for (i = 0; i < 300; i++)
        ids[i] = (uint32_t)(i * 37 % 1000);
    io.file = path2(io.dir, "t.txt");
    cr_assert_eq(spruce_tokens_save(io.file, ids, 300), 0);
    walk("spruce_tokens_load .txt", tokens_op, NULL, &io);
    free(io.file);
    io.file = path2(io.dir, "t.u32");
    cr_assert_eq(spruce_tokens_save(io.file, ids, 300), 0);
    walk("spruce_tokens_load .u32", tokens_op, NULL, &io);
}

static int npy_op(void *v)
{
    io_ctx *c = v;
    float *d;
    int64_t r, k;
    int rc = spruce__npy_read(c->file, &d, &r, &k);
    if (!rc)
        free(d);
    return rc;
}

Test(allocfail, npy, .init = io_setup, .fini = io_teardown)
{
    float w[6] = {1, 2, 3, 4, 5, 6};
    init();
    io.file = path2(io.dir, "w.npy");
    cr_assert_eq(spruce__npy_write(io.file, w, 2, 3), 0);
    walk("spruce__npy_read", npy_op, NULL, &io);
}

/* ---- the pipeline on a tiny synthetic model ----------------------------------------- */

static int pipeline_op(void *v)
{
    io_ctx *c = v;
    spruce_model *m;
    spruce_pipeline_opts o;
    spruce_pipeline_summary s;
    uint32_t calib[2 * 16];
    int rc;
    spruce_tokens_random(calib, 32, 64, 3);
    if ((rc = spruce_model_open(c->in, &m)))
        return rc;
    spruce_pipeline_opts_init(&o);
    o.prune.sparsity = 0.5f;
    o.prune.threads = 1;
    rc = spruce_pipeline_run(m, calib, 2, 16, NULL, &o, &s);
    spruce_model_free(m);
    return rc;
}

Test(allocfail, pipeline, .init = io_setup, .fini = io_teardown)
{
    init();
    walk("spruce_pipeline_run", pipeline_op, NULL, &io);
}
