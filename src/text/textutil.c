/* textutil.c: the tokenizer's building blocks: byte strings, lists of pieces,
 * the string -> id map, PCRE2 regexes and patterns, UTF-8 (including Rust's
 * String::from_utf8_lossy) and ByteLevel's byte <-> character tables
 * (tokenizers/src/pre_tokenizers/byte_level.rs: bytes_char). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "text_internal.h"

int spruce__sbuf_put(sbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *s;
        while (cap < b->len + n + 1)
            cap *= 2;
        s = realloc(b->s, cap);
        if (!s)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory (%zu bytes)", cap);
        b->s = s;
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
    return 0;
}

void spruce__sbuf_free(sbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

static int pieces_grow(pieces *p)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        size_t *o = realloc(p->off, cap * sizeof *o), *l;
        unsigned char *f;
        if (!o)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        p->off = o;
        l = realloc(p->len, cap * sizeof *l);
        if (!l)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        p->len = l;
        f = realloc(p->first, cap);
        if (!f)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        p->first = f;
        p->cap = cap;
    }
    return 0;
}

int spruce__pieces_begin(pieces *p, int first)
{
    int rc = pieces_grow(p);
    if (rc)
        return rc;
    p->off[p->n] = p->buf.len;
    p->first[p->n] = (unsigned char)first;
    return 0;
}

void spruce__pieces_end(pieces *p)
{
    p->len[p->n] = p->buf.len - p->off[p->n];
    if (p->len[p->n])
        p->n++;
}

int spruce__pieces_add(pieces *p, const char *s, size_t n, int first)
{
    int rc;
    if (!n)
        return 0;
    if ((rc = spruce__pieces_begin(p, first)) || (rc = spruce__sbuf_put(&p->buf, s, n)))
        return rc;
    spruce__pieces_end(p);
    return 0;
}

void spruce__pieces_clear(pieces *p)
{
    p->n = 0;
    p->buf.len = 0;
}

void spruce__pieces_free(pieces *p)
{
    if (!p)
        return;
    spruce__sbuf_free(&p->buf);
    free(p->off);
    free(p->len);
    free(p->first);
    memset(p, 0, sizeof *p);
}

/* ---- string -> id ---- */

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

int spruce__strmap_init(strmap *m, size_t expect)
{
    size_t cap = 16;
    memset(m, 0, sizeof *m);
    while (cap < 2 * expect + 16)
        cap *= 2;
    m->off = malloc(cap * sizeof *m->off);
    m->klen = malloc(cap * sizeof *m->klen);
    m->val = malloc(cap * sizeof *m->val);
    if (!m->off || !m->klen || !m->val) {
        spruce__strmap_free(m);
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory for %zu tokens", expect);
    }
    memset(m->klen, 0xff, cap * sizeof *m->klen);
    m->cap = cap;
    return 0;
}

static size_t find_slot(const strmap *m, const char *k, size_t n)
{
    size_t i = (size_t)hash(k, n) & (m->cap - 1);
    while (m->klen[i] != UINT32_MAX &&
           !(m->klen[i] == n && memcmp(m->keys.s + m->off[i], k, n) == 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

int spruce__strmap_put(strmap *m, const char *k, size_t n, uint32_t v)
{
    size_t i;
    int rc;
    if (n >= UINT32_MAX || m->keys.len + n >= UINT32_MAX)
        return spruce__seterr(SPRUCE_EINVAL, "tokenizer: token of %zu bytes is too long", n);
    if (2 * (m->count + 1) > m->cap) { /* grow */
        strmap g;
        size_t j;
        if ((rc = spruce__strmap_init(&g, m->cap)))
            return rc;
        g.keys = m->keys;
        for (j = 0; j < m->cap; j++)
            if (m->klen[j] != UINT32_MAX) {
                size_t s = find_slot(&g, m->keys.s + m->off[j], m->klen[j]);
                g.off[s] = m->off[j];
                g.klen[s] = m->klen[j];
                g.val[s] = m->val[j];
            }
        g.count = m->count;
        free(m->off);
        free(m->klen);
        free(m->val);
        *m = g;
    }
    i = find_slot(m, k, n);
    if (m->klen[i] != UINT32_MAX) {
        m->val[i] = v;
        return 0;
    }
    m->off[i] = (uint32_t)m->keys.len;
    if ((rc = spruce__sbuf_put(&m->keys, k, n)) || (rc = spruce__sbuf_put(&m->keys, "", 1)))
        return rc; /* each key keeps its NUL: spruce_tokenizer_token() returns it */
    m->klen[i] = (uint32_t)n;
    m->val[i] = v;
    m->count++;
    return 0;
}

int spruce__strmap_get(const strmap *m, const char *k, size_t n, uint32_t *v)
{
    size_t i;
    if (!m->cap)
        return -1;
    i = find_slot(m, k, n);
    if (m->klen[i] == UINT32_MAX)
        return -1;
    *v = m->val[i];
    return 0;
}

void spruce__strmap_free(strmap *m)
{
    spruce__sbuf_free(&m->keys);
    free(m->off);
    free(m->klen);
    free(m->val);
    memset(m, 0, sizeof *m);
}

/* ---- regular expressions ---- */

int spruce__regex_compile(regex *re, const char *pat, size_t n, const char *path,
                          const char *where)
{
    int err;
    PCRE2_SIZE at;
    re->code = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                             &err, &at, NULL);
    re->jit = 0;
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return spruce__seterr(SPRUCE_EFORMAT, "%s: %s: bad regex '%.*s' at offset %zu: %s", path,
                              where, (int)n, pat, (size_t)at, (const char *)msg);
    }
    if (pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0)
        re->jit = 1;
    return 0;
}

void spruce__regex_free(regex *re)
{
    if (re->code)
        pcre2_code_free(re->code);
    re->code = NULL;
}

int spruce__regex_next(const regex *re, pcre2_match_data *md, const char *s, size_t n,
                       size_t start, size_t *ms, size_t *me)
{
    int rc;
    PCRE2_SIZE *ov;
    if (start > n)
        return 0;
    rc = PCRE2_ERROR_JIT_STACKLIMIT;
    if (re->jit)
        rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, start, 0, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* no JIT, or its stack is too small: interpret */
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return spruce__seterr(SPRUCE_EINVAL, "tokenizer: regex match failed: %s",
                              (const char *)msg);
    }
    ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

int spruce__pattern_parse(pattern *p, json_t *j, const char *path, const char *where)
{
    json_t *s;
    memset(p, 0, sizeof *p);
    if (json_is_object(j) && (s = json_object_get(j, "String")) && json_is_string(s)) {
        p->lit_len = json_string_length(s);
        p->lit = malloc(p->lit_len + 1);
        if (!p->lit)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        memcpy(p->lit, json_string_value(s), p->lit_len + 1);
        return 0;
    }
    if (json_is_object(j) && (s = json_object_get(j, "Regex")) && json_is_string(s)) {
        p->is_regex = 1;
        return spruce__regex_compile(&p->re, json_string_value(s), json_string_length(s), path,
                                     where);
    }
    return spruce__seterr(SPRUCE_EFORMAT,
                          "%s: %s: pattern must be {\"String\": ...} or {\"Regex\": ...}", path,
                          where);
}

void spruce__pattern_free(pattern *p)
{
    free(p->lit);
    p->lit = NULL;
    spruce__regex_free(&p->re);
}

int spruce__pattern_next(const pattern *p, pcre2_match_data *md, const char *s, size_t n,
                         size_t start, size_t *ms, size_t *me)
{
    size_t i;
    if (p->is_regex)
        return spruce__regex_next(&p->re, md, s, n, start, ms, me);
    if (!p->lit_len) /* an empty string matches nothing (pattern.rs) */
        return 0;
    for (i = start; i + p->lit_len <= n; i++)
        if (s[i] == p->lit[0] && memcmp(s + i, p->lit, p->lit_len) == 0) {
            *ms = i;
            *me = i + p->lit_len;
            return 1;
        }
    return 0;
}

/* ---- UTF-8 ---- */

uint32_t spruce__utf8_get(const char *s, size_t n, size_t i, int *clen)
{
    const unsigned char *u = (const unsigned char *)s + i;
    (void)n;
    if (u[0] < 0x80) {
        *clen = 1;
        return u[0];
    }
    if (u[0] < 0xe0) {
        *clen = 2;
        return ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
    }
    if (u[0] < 0xf0) {
        *clen = 3;
        return ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
    }
    *clen = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
           ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
}

int spruce__utf8_put(uint32_t c, char out[4])
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* The length of the valid sequence at s[i], or 0 with *bad the length of its
 * maximal invalid prefix (at least 1): the Unicode "maximal subpart" rule that
 * Rust's from_utf8_lossy follows. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t i, size_t *bad)
{
    unsigned c = s[i];
    size_t need, k;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else {
        *bad = 1;
        return 0;
    }
    for (k = 1; k <= need; k++) {
        unsigned b;
        if (i + k >= n) {
            *bad = k;
            return 0;
        }
        b = s[i + k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}

size_t spruce__utf8_check(const char *s, size_t n)
{
    size_t i = 0, bad;
    while (i < n) {
        size_t l;
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        l = utf8_seq((const unsigned char *)s, n, i, &bad);
        if (!l)
            return i;
        i += l;
    }
    return n;
}

int spruce__utf8_lossy(const char *s, size_t n, sbuf *out)
{
    size_t i = 0, start = 0, bad;
    int rc;
    while (i < n) {
        size_t l = utf8_seq((const unsigned char *)s, n, i, &bad);
        if (l) {
            i += l;
            continue;
        }
        if ((rc = spruce__sbuf_put(out, s + start, i - start)) ||
            (rc = spruce__sbuf_put(out, "\xef\xbf\xbd", 3)))
            return rc;
        i += bad;
        start = i;
    }
    return spruce__sbuf_put(out, s + start, n - start);
}

int spruce__is_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* ---- ByteLevel: bytes_char() of byte_level.rs ----
 * The printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for
 * themselves; the other 68, in order, for U+0100, U+0101, ... */
static int printable(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
}

static uint32_t byte_cp(unsigned b)
{
    unsigned k, n = 0;
    if (printable(b))
        return b;
    for (k = 0; k < b; k++)
        if (!printable(k))
            n++;
    return 256 + n;
}

static char bl_tab[256][2];
static unsigned char bl_len[256];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
    unsigned k;
    for (k = 0; k < 256; k++) {
        char u[4];
        bl_len[k] = (unsigned char)spruce__utf8_put(byte_cp(k), u);
        bl_tab[k][0] = u[0];
        bl_tab[k][1] = u[1];
    }
}

int spruce__bytelevel_char(unsigned b, char out[2])
{
    pthread_once(&bl_once, bl_init);
    out[0] = bl_tab[b][0];
    out[1] = bl_tab[b][1];
    return bl_len[b];
}

int spruce__bytelevel_byte(uint32_t c)
{
    unsigned k, n = 0;
    if (c < 256)
        return printable(c) ? (int)c : -1;
    if (c >= 256 + 68)
        return -1;
    for (k = 0; k < 256; k++)
        if (!printable(k) && n++ == c - 256)
            return (int)k;
    return -1;
}

int spruce__span_push(spans *s, size_t a, size_t b, int32_t tag)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        span *p = realloc(s->v, cap * sizeof *p);
        if (!p)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->v[s->n].tag = tag;
    s->n++;
    return 0;
}
