/* normalize.c: the normalizers of tokenizers/src/normalizers/ (mod.rs,
 * unicode.rs, replace.rs, prepend.rs, strip.rs, utils.rs): Sequence, Prepend,
 * Replace (string or regex), NFC/NFD/NFKC/NFKD (utf8proc), Lowercase, Strip. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "spruce_error.h"
#include "text_internal.h"

enum { N_SEQ, N_PREPEND, N_REPLACE, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP };

struct normalizer {
    int type;
    normalizer **seq;
    size_t nseq;
    char *str; /* Prepend's prepend, Replace's content */
    size_t str_len;
    pattern pat;
    int left, right;
};

void spruce__normalizer_free(normalizer *nz)
{
    size_t i;
    if (!nz)
        return;
    for (i = 0; i < nz->nseq; i++)
        spruce__normalizer_free(nz->seq[i]);
    free(nz->seq);
    free(nz->str);
    spruce__pattern_free(&nz->pat);
    free(nz);
}

static int dup_string(json_t *v, char **s, size_t *n, const char *path, const char *where)
{
    if (!json_is_string(v))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: %s: expected a string", path, where);
    *n = json_string_length(v);
    if (!(*s = malloc(*n + 1)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    memcpy(*s, json_string_value(v), *n + 1);
    return 0;
}

int spruce__normalizer_parse(normalizer **out, json_t *j, const char *path)
{
    static const char *names[] = {"Sequence", "Prepend", "Replace", "NFC",  "NFD",
                                  "NFKC",     "NFKD",    "Lowercase", "Strip"};
    const char *type = json_string_value(json_object_get(j, "type"));
    normalizer *nz;
    size_t i;
    int rc = 0;
    *out = NULL;
    if (!type)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: normalizer: no \"type\"", path);
    for (i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(type, names[i]))
            break;
    if (i == sizeof names / sizeof *names)
        return spruce__seterr(SPRUCE_EUNSUPPORTED,
                              "%s: normalizer type '%s' is not supported (supported: Sequence, "
                              "Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)",
                              path, type);
    if (!(nz = calloc(1, sizeof *nz)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    nz->type = (int)i;
    switch (nz->type) {
    case N_SEQ: {
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: normalizer Sequence: no \"normalizers\" array",
                                path);
            break;
        }
        if (!(nz->seq = calloc(json_array_size(a) + 1, sizeof *nz->seq))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            break;
        }
        for (i = 0; i < json_array_size(a) && !rc; i++)
            if (!(rc = spruce__normalizer_parse(&nz->seq[i], json_array_get(a, i), path)))
                nz->nseq++;
        break;
    }
    case N_PREPEND:
        rc = dup_string(json_object_get(j, "prepend"), &nz->str, &nz->str_len, path,
                        "normalizer Prepend.prepend");
        break;
    case N_REPLACE:
        if (!(rc = dup_string(json_object_get(j, "content"), &nz->str, &nz->str_len, path,
                              "normalizer Replace.content")))
            rc = spruce__pattern_parse(&nz->pat, json_object_get(j, "pattern"), path,
                                       "normalizer Replace.pattern");
        break;
    case N_STRIP:
        nz->left = json_is_true(json_object_get(j, "strip_left"));
        nz->right = json_is_true(json_object_get(j, "strip_right"));
        break;
    default:
        break;
    }
    if (rc) {
        spruce__normalizer_free(nz);
        return rc;
    }
    *out = nz;
    return 0;
}

static int unicode_form(int type, const char *s, size_t n, sbuf *out)
{
    utf8proc_uint8_t *r = NULL;
    utf8proc_option_t o = UTF8PROC_STABLE;
    utf8proc_ssize_t k;
    int rc;
    if (type == N_NFC)
        o |= UTF8PROC_COMPOSE;
    else if (type == N_NFD)
        o |= UTF8PROC_DECOMPOSE;
    else if (type == N_NFKC)
        o |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else
        o |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r, o);
    if (k < 0)
        return spruce__seterr(k == UTF8PROC_ERROR_NOMEM ? SPRUCE_ENOMEM : SPRUCE_EINVAL,
                              "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(k));
    rc = spruce__sbuf_put(out, r, (size_t)k);
    free(r);
    return rc;
}

/* Rust's char::to_lowercase, one character at a time as NormalizedString's
 * lowercase() does (no final-sigma rule): utf8proc's simple mapping, plus the
 * one character whose lowercase is two (U+0130 -> i U+0307). */
static int lowercase(const char *s, size_t n, sbuf *out)
{
    size_t i = 0;
    int rc;
    while (i < n) {
        int cl;
        char u[4];
        uint32_t c = spruce__utf8_get(s, n, i, &cl);
        if (c == 0x130)
            rc = spruce__sbuf_put(out, "i\xcc\x87", 3);
        else
            rc = spruce__sbuf_put(out, u, (size_t)spruce__utf8_put((uint32_t)utf8proc_tolower((utf8proc_int32_t)c), u));
        if (rc)
            return rc;
        i += (size_t)cl;
    }
    return 0;
}

static int strip(const normalizer *nz, const char *s, size_t n, sbuf *out)
{
    size_t a = 0, b = n;
    int cl;
    while (nz->left && a < b && spruce__is_space(spruce__utf8_get(s, n, a, &cl)))
        a += (size_t)cl;
    while (nz->right && b > a) {
        size_t p = b - 1;
        while (p > a && ((unsigned char)s[p] & 0xc0) == 0x80)
            p--;
        if (!spruce__is_space(spruce__utf8_get(s, n, p, &cl)))
            break;
        b = p;
    }
    return spruce__sbuf_put(out, s + a, b - a);
}

static int apply(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n, sbuf *out)
{
    size_t at = 0, ms, me;
    int rc;
    switch (nz->type) {
    case N_PREPEND:
        if (n && (rc = spruce__sbuf_put(out, nz->str, nz->str_len)))
            return rc;
        return spruce__sbuf_put(out, s, n);
    case N_REPLACE:
        while ((rc = spruce__pattern_next(&nz->pat, md, s, n, at, &ms, &me)) == 1) {
            if ((rc = spruce__sbuf_put(out, s + at, ms - at)) ||
                (rc = spruce__sbuf_put(out, nz->str, nz->str_len)))
                return rc;
            if (me == ms) { /* an empty match: keep the next character */
                int cl;
                if (me >= n)
                    return 0;
                spruce__utf8_get(s, n, me, &cl);
                if ((rc = spruce__sbuf_put(out, s + me, (size_t)cl)))
                    return rc;
                me += (size_t)cl;
            }
            at = me;
        }
        if (rc < 0)
            return rc;
        return spruce__sbuf_put(out, s + at, n - at);
    case N_LOWER:
        return lowercase(s, n, out);
    case N_STRIP:
        return strip(nz, s, n, out);
    default:
        return unicode_form(nz->type, s, n, out);
    }
}

/* cont: s continues a stretch already begun, so Prepend (which acts on the
 * start of the whole stretch) is skipped. */
static int normalize_part(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n,
                          int cont, sbuf *out)
{
    sbuf a = {0};
    size_t i;
    int rc = 0;
    out->len = 0;
    if (!nz || (cont && nz->type == N_PREPEND))
        return spruce__sbuf_put(out, s, n);
    if (nz->type != N_SEQ)
        return apply(nz, md, s, n, out);
    if ((rc = spruce__sbuf_put(out, s, n)))
        return rc;
    for (i = 0; i < nz->nseq; i++) {
        a.len = 0;
        if ((rc = normalize_part(nz->seq[i], md, out->s, out->len, cont, &a)))
            break;
        { sbuf t = *out; *out = a; a = t; }
    }
    spruce__sbuf_free(&a);
    return rc;
}

int spruce__normalize(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n,
                      sbuf *out)
{
    return normalize_part(nz, md, s, n, 0, out);
}

int spruce__normalize_cont(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n,
                           sbuf *out)
{
    return normalize_part(nz, md, s, n, 1, out);
}

/* Whether normalizing the two sides of a cut before a '\n' that follows an
 * ASCII letter or digit apart gives the normalization of the whole, with
 * those two characters left as they are: the Unicode forms and Lowercase act
 * on characters (ASCII is stable under all four forms and composes with
 * nothing before it), Prepend acts on the start only (the later part is
 * normalized with spruce__normalize_cont), and a literal Replace whose
 * pattern holds no newline, letter or digit never matches across the cut.
 * Strip and regex Replace look at the whole stretch: no. */
int spruce__normalizer_cuttable(const normalizer *nz)
{
    size_t i;
    if (!nz)
        return 1;
    switch (nz->type) {
    case N_SEQ:
        for (i = 0; i < nz->nseq; i++)
            if (!spruce__normalizer_cuttable(nz->seq[i]))
                return 0;
        return 1;
    case N_REPLACE:
        if (nz->pat.is_regex || !nz->pat.lit_len)
            return 0;
        for (i = 0; i < nz->pat.lit_len; i++) {
            unsigned char c = (unsigned char)nz->pat.lit[i];
            if (c == '\n' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
                return 0;
        }
        for (i = 0; i < nz->str_len; i++) /* nor does its content make one */
            if (nz->str[i] == '\n')
                return 0;
        return 1;
    case N_STRIP: return 0;
    default: return 1;
    }
}
