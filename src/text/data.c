/* data.c: calibration and evaluation data from token files, text and JSON
 * lines (spruce_textdata.h), drawn as datautils.py of the published SparseGPT
 * (IST-DASLab/sparsegpt) and Wanda code draws them: get_wikitext2 for one
 * text, get_c4 for documents. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "spruce_textdata.h"
#include "text_internal.h"
#include "tokens_internal.h"

static const char *const names[] = {"auto", "ids", "u16", "u32", "text", "jsonl"};

int spruce_data_format_parse(const char *name, spruce_data_format *f)
{
    int i;
    for (i = 0; name && i < 6; i++)
        if (!strcmp(name, names[i])) {
            *f = (spruce_data_format)i;
            return 0;
        }
    return spruce__seterr(SPRUCE_EINVAL, "expected a data format ids, u16, u32, text or jsonl, "
                          "found '%s'", name ? name : "(null)");
}

const char *spruce_data_format_name(spruce_data_format f)
{
    return (unsigned)f < 6 ? names[f] : "unknown";
}

int spruce_data_needs_tokenizer(spruce_data_format f)
{
    return f == SPRUCE_DATA_TEXT || f == SPRUCE_DATA_JSONL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int spruce_data_detect(const char *path, spruce_data_format *f)
{
    const char *b;
    size_t len, i, digits = 0;
    int rc;
    if (!path || !f)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_data_detect: NULL argument");
    if ((rc = spruce__map_file(path, &b, &len)))
        return rc;
    if (len == 0)
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: expected token ids or text, found an empty file",
                            path);
    else if (ends_with(path, ".u16"))
        *f = SPRUCE_DATA_U16;
    else if (ends_with(path, ".u32"))
        *f = SPRUCE_DATA_U32;
    else if (ends_with(path, ".jsonl"))
        *f = SPRUCE_DATA_JSONL;
    else {
        for (i = 0; i < len; i++) {
            unsigned char c = (unsigned char)b[i];
            if (c >= '0' && c <= '9')
                digits++;
            else if (!is_space(c))
                break;
        }
        *f = i == len && digits ? SPRUCE_DATA_IDS : SPRUCE_DATA_TEXT;
    }
    spruce__unmap_file(b, len);
    return rc;
}

static int need_tok(const char *path, spruce_data_format f, const spruce_tokenizer *tok)
{
    if (spruce_data_needs_tokenizer(f) && !tok)
        return spruce__seterr(SPRUCE_EINVAL, "%s: reading it as %s needs a tokenizer "
                              "(tokenizer.json in the model directory)", path,
                              spruce_data_format_name(f));
    if (f == SPRUCE_DATA_AUTO || (unsigned)f > SPRUCE_DATA_JSONL)
        return spruce__seterr(SPRUCE_EINVAL, "%s: no data format given", path);
    return 0;
}

static int read_token_file(const char *path, spruce_data_format f, uint32_t **ids, size_t *n)
{
    const char *b;
    size_t len;
    int rc, kind = f == SPRUCE_DATA_U16 ? SPRUCE__TOKENS_U16
                   : f == SPRUCE_DATA_U32 ? SPRUCE__TOKENS_U32 : SPRUCE__TOKENS_TXT;
    if ((rc = spruce__map_file(path, &b, &len)))
        return rc;
    rc = spruce__tokens_parse_as(path, kind, (const unsigned char *)b, len, ids, n);
    spruce__unmap_file(b, len);
    return rc;
}

/* ---- JSON lines: an index of the lines, one document decoded at a time ---- */

typedef struct {
    const char *path, *b;
    size_t len;
    size_t *off, *end; /* the non-blank lines */
    int64_t *line;     /* their 0-based line numbers */
    size_t n;
} jsonl;

static void jsonl_close(jsonl *j)
{
    spruce__unmap_file(j->b, j->len);
    free(j->off);
    free(j->end);
    free(j->line);
}

static int jsonl_open(jsonl *j, const char *path)
{
    size_t pos = 0, cap = 0, ln = 0;
    int rc;
    memset(j, 0, sizeof *j);
    j->path = path;
    if ((rc = spruce__map_file(path, &j->b, &j->len)))
        return rc;
    while (pos < j->len) {
        const char *nl = memchr(j->b + pos, '\n', j->len - pos);
        size_t e = nl ? (size_t)(nl - j->b) : j->len, k = pos;
        while (k < e && is_space((unsigned char)j->b[k]))
            k++;
        if (k < e) {
            if (j->n == cap) {
                size_t nc = cap ? 2 * cap : 1024;
                size_t *o = realloc(j->off, nc * sizeof *o), *d;
                int64_t *l;
                if (o)
                    j->off = o;
                d = o ? realloc(j->end, nc * sizeof *d) : NULL;
                if (d)
                    j->end = d;
                l = d ? realloc(j->line, nc * sizeof *l) : NULL;
                if (!l) {
                    jsonl_close(j);
                    return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory indexing lines", path);
                }
                j->line = l;
                cap = nc;
            }
            j->off[j->n] = pos;
            j->end[j->n] = e;
            j->line[j->n++] = (int64_t)ln;
        }
        ln++;
        pos = e + 1;
    }
    if (!j->n) {
        jsonl_close(j);
        return spruce__seterr(SPRUCE_EFORMAT, "%s: expected JSON lines with a \"text\", found none",
                              path);
    }
    return 0;
}

/* The ids of document d (tokenized on its own). */
static int jsonl_doc(const jsonl *j, size_t d, const spruce_tokenizer *tok, int add_special,
                     uint32_t **ids, size_t *n)
{
    json_error_t je;
    json_t *o = json_loadb(j->b + j->off[d], j->end[d] - j->off[d], JSON_ALLOW_NUL, &je), *t;
    int rc;
    *ids = NULL;
    *n = 0;
    if (!o)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: line %lld: not JSON: %s", j->path,
                              (long long)j->line[d] + 1, je.text);
    t = json_object_get(o, "text");
    if (!json_is_string(t)) {
        json_decref(o);
        return spruce__seterr(SPRUCE_EFORMAT, "%s: line %lld: expected an object with a \"text\" "
                              "string", j->path, (long long)j->line[d] + 1);
    }
    rc = spruce_tokenizer_encode(tok, json_string_value(t), json_string_length(t), add_special,
                                 ids, n);
    json_decref(o);
    if (rc)
        return spruce__seterr(rc, "%s: line %lld: %s", j->path, (long long)j->line[d] + 1,
                              spruce_errdetail());
    return 0;
}

static int append(uint32_t **v, size_t *n, size_t *cap, const uint32_t *src, size_t k)
{
    if (*n + k > *cap) {
        size_t c = *cap ? *cap : 4096;
        uint32_t *p;
        while (c < *n + k)
            c *= 2;
        if (!(p = realloc(*v, c * sizeof *p)))
            return spruce__seterr(SPRUCE_ENOMEM, "out of memory for %zu ids", c);
        *v = p;
        *cap = c;
    }
    if (k)
        memcpy(*v + *n, src, k * sizeof *src);
    *n += k;
    return 0;
}

static int jsonl_all(const char *path, const spruce_tokenizer *tok, int add_special,
                     spruce_tokenizer_progress progress, void *ctx, uint32_t **ids, size_t *n)
{
    jsonl j;
    size_t d, cap = 0;
    int rc;
    if ((rc = jsonl_open(&j, path)))
        return rc;
    for (d = 0; d < j.n && !rc; d++) {
        uint32_t *v;
        size_t k;
        if (!(rc = jsonl_doc(&j, d, tok, add_special, &v, &k)))
            rc = append(ids, n, &cap, v, k);
        free(v);
        if (progress)
            progress(ctx, j.end[d], j.len);
    }
    jsonl_close(&j);
    if (!rc && !*n)
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: its documents hold no tokens", path);
    return rc;
}

int spruce_data_read_ids(const char *path, spruce_data_format f, const spruce_tokenizer *tok,
                         int add_special, spruce_tokenizer_progress progress, void *ctx,
                         uint32_t **ids, size_t *n)
{
    int rc;
    if (!path || !ids || !n)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_data_read_ids: NULL argument");
    *ids = NULL;
    *n = 0;
    if ((rc = need_tok(path, f, tok)))
        return rc;
    if (f == SPRUCE_DATA_JSONL)
        rc = jsonl_all(path, tok, add_special, progress, ctx, ids, n);
    else if (f == SPRUCE_DATA_TEXT) {
        if (!(rc = spruce_tokenizer_encode_file(tok, path, add_special, progress, ctx, ids, n)) &&
            !*n)
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: the text holds no tokens", path);
    } else
        rc = read_token_file(path, f, ids, n);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

/* ---- drawing windows ---- */

/* splitmix64 */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, hi] (Lemire's multiply-shift, with its rejection step). */
static uint64_t uniform(uint64_t *s, uint64_t hi)
{
    uint64_t range = hi + 1, x, t;
    unsigned __int128 m;
    if (range == 0)
        return next_u64(s);
    t = -range % range;
    do {
        x = next_u64(s);
        m = (unsigned __int128)x * range;
    } while ((uint64_t)m < t);
    return (uint64_t)(m >> 64);
}

/* random.randint(0, n - seqlen - 1) of datautils.py; 0 when n == seqlen. */
static size_t window_start(uint64_t *s, size_t n, size_t seqlen)
{
    return n > seqlen ? (size_t)uniform(s, n - seqlen - 1) : 0;
}

static int calib_docs(const char *path, const spruce_tokenizer *tok, int add_special,
                      int nsamples, int seqlen, uint64_t *rng, spruce_tokenizer_progress progress,
                      void *ctx, uint32_t *out, spruce_data_window *win)
{
    jsonl j;
    unsigned char *is_short = NULL;
    size_t nshort = 0, longest = 0;
    int i, rc;
    if ((rc = jsonl_open(&j, path)))
        return rc;
    if (!(is_short = calloc(j.n, 1))) {
        jsonl_close(&j);
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    }
    for (i = 0; i < nsamples && !rc; i++) {
        for (;;) { /* get_c4: redraw until a document is long enough */
            size_t d = (size_t)uniform(rng, j.n - 1), k;
            uint32_t *v;
            if (is_short[d])
                continue;
            if ((rc = jsonl_doc(&j, d, tok, add_special, &v, &k)))
                break;
            if (k >= (size_t)seqlen) {
                win[i].doc = j.line[d];
                win[i].start = window_start(rng, k, (size_t)seqlen);
                memcpy(out + (size_t)i * (size_t)seqlen, v + win[i].start,
                       (size_t)seqlen * sizeof *v);
                free(v);
                break;
            }
            free(v);
            if (k > longest)
                longest = k;
            is_short[d] = 1;
            if (++nshort == j.n) {
                rc = spruce__seterr(SPRUCE_EINVAL, "%s: no document holds %d tokens (seqlen): "
                                    "the longest of its %zu holds %zu", path, seqlen, j.n, longest);
                break;
            }
        }
        if (progress)
            progress(ctx, (size_t)i + 1, (size_t)nsamples);
    }
    free(is_short);
    jsonl_close(&j);
    return rc;
}

int spruce_data_calib(const char *path, spruce_data_format f, const spruce_tokenizer *tok,
                      int add_special, int nsamples, int seqlen, uint64_t seed,
                      spruce_tokenizer_progress progress, void *ctx, uint32_t **ids,
                      spruce_data_window **win, int *count)
{
    uint32_t *all = NULL, *out = NULL;
    spruce_data_window *w = NULL;
    size_t n = 0, k;
    uint64_t rng = seed;
    int i, rc = 0, cnt = nsamples;
    if (!path || !ids || !win || !count || nsamples < 1 || seqlen < 1)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_data_calib: bad argument");
    *ids = NULL;
    *win = NULL;
    *count = 0;
    if ((rc = need_tok(path, f, tok)))
        return rc;
    if (f != SPRUCE_DATA_JSONL) {
        if ((rc = spruce_data_read_ids(path, f, tok, add_special,
                                       f == SPRUCE_DATA_TEXT ? progress : NULL, ctx, &all, &n)))
            return rc;
        if (n < (size_t)seqlen) {
            free(all);
            return spruce__seterr(SPRUCE_EINVAL, "%s: holds %zu tokens, fewer than one window "
                                  "of %d", path, n, seqlen);
        }
        if (f != SPRUCE_DATA_TEXT && n / (size_t)seqlen < (size_t)cnt)
            cnt = (int)(n / (size_t)seqlen);
    }
    out = malloc((size_t)cnt * (size_t)seqlen * sizeof *out);
    w = malloc((size_t)cnt * sizeof *w);
    if (!out || !w) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory for %d windows of %d tokens", path,
                            cnt, seqlen);
        goto done;
    }
    if (f == SPRUCE_DATA_JSONL) {
        rc = calib_docs(path, tok, add_special, cnt, seqlen, &rng, NULL, NULL, out, w);
        goto done;
    }
    for (i = 0; i < cnt; i++) { /* get_wikitext2, or a token file's consecutive windows */
        k = f == SPRUCE_DATA_TEXT ? window_start(&rng, n, (size_t)seqlen)
                                  : (size_t)i * (size_t)seqlen;
        w[i].doc = -1;
        w[i].start = k;
        memcpy(out + (size_t)i * (size_t)seqlen, all + k, (size_t)seqlen * sizeof *out);
    }
done:
    free(all);
    if (rc) {
        free(out);
        free(w);
        return rc;
    }
    *ids = out;
    *win = w;
    *count = cnt;
    return 0;
}
