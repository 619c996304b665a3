/* test_memstat.c: the measured memory (spruce_memstat), the model's
 * embedding and head kept out of memory until logits are needed, and the
 * figures `spruce prune` prints on stories260k. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_ckpt.h"
#include "spruce_error.h"
#include "spruce_memstat.h"
#include "spruce_model.h"
#include "masks_testutil.h"

#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * MIB)

Test(memstat, status_fields_are_parsed_in_bytes)
{
    spruce_memstat m;
    spruce_memstat_init(&m);
    spruce_memstat_parse_status("Name:\tx\nVmRSS:\t  9999 kB\nRssAnon:\t    1234 kB\n"
                                "RssFile:\t      56 kB\nRssShmem:\t 0 kB\n", &m);
    cr_assert_eq(m.rss_anon, 1234 * 1024.0);
    cr_assert_eq(m.rss_file, 56 * 1024.0);
    /* absent lines (an old kernel) stay unknown, and a prefix is no match */
    spruce_memstat_parse_status("VmRSS:\t 10 kB\nRssAnonymous: 5 kB\n", &m);
    cr_assert_eq(m.rss_anon, -1);
    cr_assert_eq(m.rss_file, -1);
    spruce_memstat_parse_status(NULL, &m);
    cr_assert_eq(m.rss_anon, -1);
}

Test(memstat, touched_memory_is_counted)
{
    spruce_memstat before, after;
    size_t n = (size_t)(64 * MIB);
    volatile char *p;
    size_t i;
    cr_assert_eq(spruce_memstat_read(&before), 0);
    cr_assert_gt(before.peak_rss, 0);
    p = malloc(n);
    cr_assert_not_null(p);
    for (i = 0; i < n; i += 4096)
        p[i] = (char)i;
    cr_assert_eq(spruce_memstat_read(&after), 0);
    cr_assert_geq(after.peak_rss, before.peak_rss + 60 * MIB, "peak %.1f MiB -> %.1f MiB",
                  before.peak_rss / MIB, after.peak_rss / MIB);
    if (after.rss_anon >= 0)
        cr_assert_geq(after.rss_anon, before.rss_anon + 60 * MIB, "RssAnon %.1f -> %.1f MiB",
                      before.rss_anon / MIB, after.rss_anon / MIB);
    free((void *)p);
    cr_assert_eq(spruce_memstat_read(NULL), SPRUCE_EINVAL);
}

/* A model with a wide vocabulary (V x h = 2^21 weights, 8 MiB in float32
 * each for the embedding and the head): opening it and embedding tokens holds
 * neither in anonymous memory; the first logits convert the head. */
Test(memstat, embedding_and_head_are_not_held_until_logits)
{
    spruce_synth_config sc;
    spruce_model *m;
    spruce_memstat a, b, c;
    const char *path;
    uint32_t ids[4] = { 0, 1, 16383, 16384 * 8 - 1 };
    float *x, *xn, *logits;
    double table = 4.0 * 131072 * 16;
    spruce_synth_defaults(&sc);
    sc.hidden = 16;
    sc.intermediate = 32;
    sc.layers = 1;
    sc.heads = 2;
    sc.kv_heads = 2;
    sc.vocab = 131072;
    sc.max_position = 16;
    sc.dtype = SPRUCE_DTYPE_F32;
    make_tmpdir();
    path = tpath("m");
    cr_assert_eq(spruce_synth_write(path, &sc, 0), 0, "%s", spruce_errdetail());
    x = calloc(4 * 16, sizeof *x);
    xn = calloc(4 * 16, sizeof *xn);
    logits = calloc((size_t)4 * sc.vocab, sizeof *logits);
    cr_assert(x && xn && logits);
    if (spruce_memstat_read(&a) || a.rss_anon < 0)
        cr_skip_test("this platform does not report RssAnon");
    cr_assert_eq(spruce_model_open(path, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_embed(m, ids, 4, x), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_memstat_read(&b), 0);
    cr_assert_lt(b.rss_anon - a.rss_anon, 0.5 * table, "opening and embedding took %.1f MiB "
                 "of anonymous memory (a float32 table is %.1f MiB)",
                 (b.rss_anon - a.rss_anon) / MIB, table / MIB);
    {   /* rows read from the file are given back: 4096 random ids touch every
         * page of the 8 MiB embedding */
        uint32_t *many = malloc(4096 * sizeof *many);
        float *xs = malloc((size_t)4096 * 16 * sizeof *xs);
        spruce_memstat before, after;
        int i;
        cr_assert(many && xs);
        for (i = 0; i < 4096; i++)
            many[i] = (uint32_t)(((uint64_t)i * 2654435761u) % 131072);
        cr_assert_eq(spruce_memstat_read(&before), 0);
        cr_assert_eq(spruce_model_embed(m, many, 4096, xs), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_memstat_read(&after), 0);
        if (after.rss_file >= 0)
            cr_assert_lt(after.rss_file - before.rss_file, 0.25 * table,
                         "embedding 4096 rows left %.1f MiB of the file resident",
                         (after.rss_file - before.rss_file) / MIB);
        free(many);
        free(xs);
    }
    cr_assert_eq(spruce_model_head(m, x, 4, xn, logits), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_memstat_read(&c), 0);
    cr_assert_geq(c.rss_anon - b.rss_anon, 0.9 * table, "the head's float32 copy: %.1f MiB",
                  (c.rss_anon - b.rss_anon) / MIB);
    spruce_model_free(m);
    free(x);
    free(xn);
    free(logits);
    remove_tmpdir();
}

/* the value after key in s, as a double; the test fails when absent */
static double field_after(const char *s, const char *key)
{
    const char *p = strstr(s, key);
    cr_assert_not_null(p, "no \"%s\" in:\n%s", key, s);
    return strtod(p + strlen(key), NULL);
}

Test(memstat, prune_reports_measured_memory_beside_the_estimate)
{
    const char *root = getenv("SPRUCE_FIXTURES"), *bin;
    char fix[1024], cmd[4096], *out;
    double est, peak, anon, mapped;
    int st;
    snprintf(fix, sizeof fix, "%s/stories260k/model.safetensors", root ? root : "");
    if (!root || !exists(fix))
        cr_skip_test("stories260k fixture not found: set SPRUCE_FIXTURES to the directory "
                     "holding stories260k/");
    fix[strlen(fix) - strlen("/model.safetensors")] = '\0';
    bin = spruce_bin();
    make_tmpdir();
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s/calib.u16' --pattern 2:4 "
             "--nsamples 8 --seqlen 128 --threads 1 2>/dev/null", bin, fix, tpath("p"), fix);
    out = capture(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    est = field_after(out, "memory: estimate ");
    peak = field_after(out, "peak resident ");
    anon = field_after(out, "largest sampled anonymous ");
    mapped = field_after(out, "GiB, mapped ");
    /* stories260k: 0.3 M parameters; the estimate is its activations, one
     * block, the Hessians and the workspace: a few MiB */
    cr_assert(est > 1 * MIB / GIB && est < 0.1, "estimate %.4f GiB", est);
    cr_assert(peak > 0 && peak < est + 0.5, "peak %.4f GiB, estimate %.4f GiB", peak, est);
    cr_assert(anon > 0.5 * est && anon <= peak, "anonymous %.4f GiB, peak %.4f GiB", anon, peak);
    cr_assert(mapped > 0 && mapped <= peak, "mapped %.4f GiB, peak %.4f GiB", mapped, peak);
    free(out);
    remove_tmpdir();
}
