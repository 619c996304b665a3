/* families_testutil.h: the shared fixtures of the model families
 * ($SPRUCE_FIXTURES/families/<name>: a checkpoint, ids.txt and the golden
 * logits.f32 of NSEQ sequences of SEQ tokens), for test_families.c and
 * test_moe.c. */
#ifndef SPRUCE_FAMILIES_TESTUTIL_H
#define SPRUCE_FAMILIES_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "model_testutil.h"
#include "spruce_decode.h"
#include "spruce_model.h"
#include "spruce_tokens.h"

/* A correct float32 forward lands within about 1e-5 of the golden logits;
 * every mistake tried on these fixtures moved some logit by 0.48 or more. */
#define TOL 1e-4
#define NSEQ 2
#define SEQ 48

/* $SPRUCE_FIXTURES/families/<name> into buf, or 0 when absent. */
static inline int family_dir(const char *name, char *buf, size_t size)
{
    const char *root = getenv("SPRUCE_FIXTURES");
    if (!root)
        return 0;
    snprintf(buf, size, "%s/families/%s", root, name);
    return exists(buf);
}

#define NEED_FAMILY(dir, name)                                                          \
    char dir[1024];                                                                     \
    if (!family_dir(name, dir, sizeof dir)) {                                           \
        cr_skip_test("families fixture %s not found: set SPRUCE_FIXTURES to the "      \
                     "directory holding families/%s", name, name);                      \
        return;                                                                         \
    }

#define NEED_SPRUCE_BIN(bin)                                                            \
    const char *bin = getenv("SPRUCE_BIN");                                             \
    if (!bin || !exists(bin)) {                                                         \
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");              \
        return;                                                                         \
    }

static inline int sh(const char *cmd)
{
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st), "%s did not exit", cmd);
    return WEXITSTATUS(st);
}

/* The fixture's ids (NSEQ x SEQ) and golden logits (NSEQ x SEQ x vocab). */
static inline void load_golden(const char *dir, int vocab, uint32_t **ids, float **logits)
{
    char path[1200];
    size_t n = 0, nl;
    FILE *f;
    snprintf(path, sizeof path, "%s/ids.txt", dir);
    cr_assert_eq(spruce_tokens_load(path, ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, (size_t)NSEQ * SEQ, "%s: %zu ids", path, n);
    nl = (size_t)NSEQ * SEQ * (size_t)vocab;
    *logits = malloc(nl * sizeof(float));
    cr_assert_not_null(*logits);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    cr_assert_eq(fread(*logits, sizeof(float), nl, f), nl, "%s: short", path);
    fclose(f);
}

static inline double max_abs_diff(const float *a, const float *b, size_t n)
{
    double mx = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx))
            mx = d;   /* NaN counts as the largest */
    }
    return mx;
}

/* `spruce prune` on the fixture dir with 16 random windows of 32 ids (seed 7)
 * and the options how, into d/pruned (its path in out); stdout and stderr
 * go to d/out. */
static inline void prune_fixture(const char *bin, const char *dir, const char *d, int vocab,
                                 const char *how, char *out, size_t size)
{
    char calib[1200], cmd[8192];
    uint32_t *cal = malloc(sizeof *cal * 16 * 32);
    cr_assert_not_null(cal);
    spruce_tokens_random(cal, 16 * 32, (uint32_t)vocab, 7);
    snprintf(calib, sizeof calib, "%s/calib.u16", d);
    cr_assert_eq(spruce_tokens_save(calib, cal, 16 * 32), 0);
    free(cal);
    snprintf(out, size, "%s/pruned", d);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s' %s --seqlen 32 "
             "--nsamples 16 >'%s/out' 2>&1", bin, dir, out, calib, how, d);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
}

/* m evaluates the fixture's sequences to a finite perplexity. */
static inline void expect_evaluates(spruce_model *m, const char *dir)
{
    uint32_t *ids;
    float *gold;
    double ppl = 0;
    int nwin = 0;
    load_golden(dir, spruce_model_config(m)->vocab_size, &ids, &gold);
    cr_assert_eq(spruce_model_perplexity(m, ids, (size_t)NSEQ * SEQ, SEQ, NULL, NULL, &ppl,
                                         &nwin), 0, "%s", spruce_errdetail());
    cr_assert(isfinite(ppl) && ppl > 1 && nwin == NSEQ, "perplexity %g", ppl);
    free(gold);
    free(ids);
}

/* The largest |logit - ref| of a decoder of m in mode fed ids[0..T) one by
 * one, ref (T, vocab) the expected logits of every position. */
static inline double decoder_error(spruce_model *m, spruce_decode_mode mode, const uint32_t *ids,
                            int T, const float *ref)
{
    spruce_decoder *dec = NULL;
    int V = spruce_model_config(m)->vocab_size, t;
    float *lg = malloc(sizeof *lg * V);
    double worst = 0;
    cr_assert_not_null(lg);
    cr_assert_eq(spruce_decoder_create(m, T, mode, &dec), 0, "%s", spruce_errdetail());
    if (mode != SPRUCE_DECODE_DENSE)
        cr_assert_gt(spruce_decoder_sparse_layers(dec), 0, "mode %d packs no layer", mode);
    for (t = 0; t < T; t++) {
        double dd;
        cr_assert_eq(spruce_decoder_step(dec, ids[t], lg), 0, "%s", spruce_errdetail());
        dd = max_abs_diff(lg, ref + (size_t)t * V, (size_t)V);
        worst = dd > worst ? dd : worst;
    }
    spruce_decoder_free(dec);
    free(lg);
    return worst;
}

/* The JSON header of dir/model.safetensors (the test fails on a bad file). */
static inline json_t *st_read_header(const char *dir)
{
    char path[1300], *hdr;
    uint64_t hlen = 0;
    json_error_t err;
    json_t *h;
    FILE *f;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert(f = fopen(path, "rb"), "%s", path);
    cr_assert_eq(fread(&hlen, 8, 1, f), 1);   /* little-endian on this machine */
    cr_assert(hdr = malloc(hlen + 1));
    cr_assert_eq(fread(hdr, 1, hlen, f), hlen);
    hdr[hlen] = 0;
    fclose(f);
    cr_assert(h = json_loads(hdr, 0, &err), "%s: %s", path, err.text);
    free(hdr);
    return h;
}

/* dst/model.safetensors: the header h (offsets into src's data section),
 * src/model.safetensors' data section, then n_extra bytes of extra (which
 * h's entries may point at, after the data). */
static inline void st_write(const char *src, const char *dst, json_t *h, const void *extra,
                            size_t n_extra)
{
    char path[1300], buf[65536], *dumped;
    uint64_t hlen = 0, outlen;
    size_t r, len, pad, i;
    FILE *in, *out;
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    cr_assert(in = fopen(path, "rb"), "%s", path);
    cr_assert_eq(fread(&hlen, 8, 1, in), 1);
    cr_assert_eq(fseek(in, (long)(8 + hlen), SEEK_SET), 0);
    cr_assert(dumped = json_dumps(h, JSON_COMPACT));
    len = strlen(dumped);
    pad = (8 - (8 + len) % 8) % 8;
    outlen = len + pad;
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    cr_assert(out = fopen(path, "wb"), "%s", path);
    fwrite(&outlen, 8, 1, out);
    fwrite(dumped, 1, len, out);
    for (i = 0; i < pad; i++)
        fputc(' ', out);
    while ((r = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, r, out), r);
    if (n_extra)
        cr_assert_eq(fwrite(extra, 1, n_extra, out), n_extra);
    cr_assert_eq(fclose(out), 0);
    fclose(in);
    free(dumped);
}

/* The estimate and the largest sampled anonymous memory (GiB) that `spruce
 * prune` printed into the file at path; -1 where a line is missing. */
static inline void prune_memory_lines(const char *path, double *est, double *anon)
{
    char line[1024];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    *est = *anon = -1;
    while (fgets(line, sizeof line, f)) {
        const char *a = strstr(line, "largest sampled anonymous ");
        if (!strncmp(line, "memory: estimate ", 17))
            *est = atof(line + 17);
        if (a)
            *anon = atof(a + strlen("largest sampled anonymous "));
    }
    fclose(f);
}

#endif
