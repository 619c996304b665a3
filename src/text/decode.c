/* decode.c: the decoders of tokenizers/src/decoders/ (mod.rs, byte_level.rs
 * in pre_tokenizers/, metaspace.rs, byte_fallback.rs, fuse.rs, strip.rs,
 * sequence.rs; Replace in normalizers/replace.rs): each maps the list of
 * token strings to a new list (decode_chain); the text is their
 * concatenation. */
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "text_internal.h"

enum { D_SEQ, D_BYTELEVEL, D_METASPACE, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP };

struct decoder {
    int type;
    decoder **seq;
    size_t nseq;
    pattern pat;
    char *content;
    size_t content_len;
    uint32_t strip_cp; /* Strip's content character */
    long start, stop;
    char rep[4];
    int rep_len, prepend; /* Metaspace: replacement; prepend_scheme != never */
};

void spruce__decoder_free(decoder *d)
{
    size_t i;
    if (!d)
        return;
    for (i = 0; i < d->nseq; i++)
        spruce__decoder_free(d->seq[i]);
    free(d->seq);
    spruce__pattern_free(&d->pat);
    free(d->content);
    free(d);
}

static int one_char(json_t *v, char *buf, int *len, uint32_t *cp)
{
    int cl;
    size_t n = json_string_length(v);
    if (!json_is_string(v) || !n || n > 4 ||
        spruce__utf8_check(json_string_value(v), n) != n)
        return -1;
    *cp = spruce__utf8_get(json_string_value(v), n, 0, &cl);
    if ((size_t)cl != n)
        return -1;
    memcpy(buf, json_string_value(v), n);
    *len = (int)n;
    return 0;
}

int spruce__decoder_parse(decoder **out, json_t *j, const char *path)
{
    static const char *names[] = {"Sequence",     "ByteLevel", "Metaspace", "Replace",
                                  "ByteFallback", "Fuse",      "Strip"};
    const char *type = json_string_value(json_object_get(j, "type"));
    decoder *d;
    size_t i;
    int rc = 0;
    *out = NULL;
    if (!type)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: decoder: no \"type\"", path);
    for (i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(type, names[i]))
            break;
    if (i == sizeof names / sizeof *names)
        return spruce__seterr(SPRUCE_EUNSUPPORTED,
                              "%s: decoder type '%s' is not supported (supported: Sequence, "
                              "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)",
                              path, type);
    if (!(d = calloc(1, sizeof *d)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    d->type = (int)i;
    switch (d->type) {
    case D_SEQ: {
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a)) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: decoder Sequence: no \"decoders\" array", path);
            break;
        }
        if (!(d->seq = calloc(json_array_size(a) + 1, sizeof *d->seq))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            break;
        }
        for (i = 0; i < json_array_size(a) && !rc; i++)
            if (!(rc = spruce__decoder_parse(&d->seq[i], json_array_get(a, i), path)))
                d->nseq++;
        break;
    }
    case D_REPLACE: {
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: decoder Replace.content: expected a string",
                                path);
            break;
        }
        d->content_len = json_string_length(c);
        if (!(d->content = malloc(d->content_len + 1))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            break;
        }
        memcpy(d->content, json_string_value(c), d->content_len + 1);
        rc = spruce__pattern_parse(&d->pat, json_object_get(j, "pattern"), path,
                                   "decoder Replace.pattern");
        break;
    }
    case D_STRIP: {
        char b[4];
        int l;
        json_t *a = json_object_get(j, "start"), *z = json_object_get(j, "stop");
        if (one_char(json_object_get(j, "content"), b, &l, &d->strip_cp) || !json_is_integer(a) ||
            !json_is_integer(z) || json_integer_value(a) < 0 || json_integer_value(z) < 0) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: decoder Strip: expected one character \"content\" and "
                                "non-negative \"start\" and \"stop\"",
                                path);
            break;
        }
        d->start = (long)json_integer_value(a);
        d->stop = (long)json_integer_value(z);
        break;
    }
    case D_METASPACE: {
        uint32_t cp;
        json_t *s = json_object_get(j, "prepend_scheme");
        if (one_char(json_object_get(j, "replacement"), d->rep, &d->rep_len, &cp)) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: decoder Metaspace.replacement: expected one character", path);
            break;
        }
        if (s)
            d->prepend = !(json_is_string(s) && !strcmp(json_string_value(s), "never"));
        else
            d->prepend = !json_is_false(json_object_get(j, "add_prefix_space"));
        break;
    }
    default:
        break;
    }
    if (rc) {
        spruce__decoder_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

static int replace(const decoder *d, pcre2_match_data *md, const char *s, size_t n, pieces *out)
{
    size_t at = 0, ms, me;
    int rc;
    if ((rc = spruce__pieces_begin(out, 0)))
        return rc;
    while ((rc = spruce__pattern_next(&d->pat, md, s, n, at, &ms, &me)) == 1 && me > ms) {
        if ((rc = spruce__sbuf_put(&out->buf, s + at, ms - at)) ||
            (rc = spruce__sbuf_put(&out->buf, d->content, d->content_len)))
            return rc;
        at = me;
    }
    if (rc < 0 || (rc = spruce__sbuf_put(&out->buf, s + at, n - at)))
        return rc;
    spruce__pieces_end(out);
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* byte_fallback.rs: runs of <0xXX> tokens become their bytes when those are
 * valid UTF-8, else one U+FFFD per byte. */
static int flush_bytes(sbuf *bytes, pieces *out)
{
    int rc = 0;
    size_t i;
    if (!bytes->len)
        return 0;
    if (spruce__utf8_check(bytes->s, bytes->len) == bytes->len)
        rc = spruce__pieces_add(out, bytes->s, bytes->len, 0);
    else
        for (i = 0; i < bytes->len && !rc; i++)
            rc = spruce__pieces_add(out, "\xef\xbf\xbd", 3, 0);
    bytes->len = 0;
    return rc;
}

static int one(const decoder *d, pcre2_match_data *md, const pieces *in, pieces *out)
{
    size_t i;
    int rc = 0;
    sbuf bytes = {0};
    spruce__pieces_clear(out);
    switch (d->type) {
    case D_BYTELEVEL: { /* byte_level.rs decode_chain: one string, from_utf8_lossy */
        sbuf raw = {0};
        for (i = 0; i < in->n && !rc; i++) {
            const char *s = in->buf.s + in->off[i];
            size_t n = in->len[i], k = 0, start = raw.len;
            while (k < n && !rc) {
                int cl, b = spruce__bytelevel_byte(spruce__utf8_get(s, n, k, &cl));
                unsigned char c = (unsigned char)b;
                if (b < 0) { /* a character outside the table: the token's own bytes */
                    raw.len = start;
                    rc = spruce__sbuf_put(&raw, s, n);
                    break;
                }
                rc = spruce__sbuf_put(&raw, &c, 1);
                k += (size_t)cl;
            }
        }
        if (!rc && !(rc = spruce__pieces_begin(out, 0)) &&
            !(rc = spruce__utf8_lossy(raw.s ? raw.s : "", raw.len, &out->buf)))
            spruce__pieces_end(out);
        spruce__sbuf_free(&raw);
        return rc;
    }
    case D_FUSE:
        if ((rc = spruce__pieces_begin(out, 0)))
            return rc;
        for (i = 0; i < in->n && !rc; i++)
            rc = spruce__sbuf_put(&out->buf, in->buf.s + in->off[i], in->len[i]);
        if (!rc)
            spruce__pieces_end(out);
        return rc;
    default:
        break;
    }
    for (i = 0; i < in->n && !rc; i++) {
        const char *s = in->buf.s + in->off[i];
        size_t n = in->len[i];
        switch (d->type) {
        case D_REPLACE:
            rc = replace(d, md, s, n, out);
            break;
        case D_BYTEFALLBACK:
            if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 &&
                hexval(s[4]) >= 0) {
                unsigned char b = (unsigned char)(hexval(s[3]) * 16 + hexval(s[4]));
                rc = spruce__sbuf_put(&bytes, &b, 1);
            } else if (!(rc = flush_bytes(&bytes, out)))
                rc = spruce__pieces_add(out, s, n, 0);
            break;
        case D_STRIP: {
            size_t a = 0, b = n;
            long k;
            int cl;
            for (k = 0; k < d->start && a < b; k++) {
                if (spruce__utf8_get(s, n, a, &cl) != d->strip_cp)
                    break;
                a += (size_t)cl;
            }
            for (k = 0; k < d->stop && b > a; k++) {
                size_t p = b - 1;
                while (p > a && ((unsigned char)s[p] & 0xc0) == 0x80)
                    p--;
                if (spruce__utf8_get(s, n, p, &cl) != d->strip_cp)
                    break;
                b = p;
            }
            rc = spruce__pieces_add(out, s + a, b - a, 0);
            break;
        }
        case D_METASPACE: { /* metaspace.rs: the replacement is a space, dropped in token 0 */
            size_t k = 0;
            if ((rc = spruce__pieces_begin(out, 0)))
                break;
            while (k < n && !rc) {
                if (n - k >= (size_t)d->rep_len && !memcmp(s + k, d->rep, (size_t)d->rep_len)) {
                    if (!(i == 0 && d->prepend))
                        rc = spruce__sbuf_put(&out->buf, " ", 1);
                    k += (size_t)d->rep_len;
                } else {
                    int cl;
                    spruce__utf8_get(s, n, k, &cl);
                    rc = spruce__sbuf_put(&out->buf, s + k, (size_t)cl);
                    k += (size_t)cl;
                }
            }
            if (!rc)
                spruce__pieces_end(out);
            break;
        }
        default:
            break;
        }
    }
    if (!rc && d->type == D_BYTEFALLBACK)
        rc = flush_bytes(&bytes, out);
    spruce__sbuf_free(&bytes);
    return rc;
}

/* Apply d (a Sequence: each of its decoders in turn) to *toks. */
static int chain(const decoder *d, pcre2_match_data *md, pieces **toks, pieces **tmp)
{
    size_t i;
    int rc;
    if (d->type == D_SEQ) {
        for (i = 0; i < d->nseq; i++)
            if ((rc = chain(d->seq[i], md, toks, tmp)))
                return rc;
        return 0;
    }
    if ((rc = one(d, md, *toks, *tmp)))
        return rc;
    {
        pieces *t = *toks;
        *toks = *tmp;
        *tmp = t;
    }
    return 0;
}

int spruce__decode(const decoder *d, pcre2_match_data *md, pieces **toks, pieces **tmp,
                   sbuf *out)
{
    size_t i;
    int rc = 0;
    if (d && (rc = chain(d, md, toks, tmp)))
        return rc;
    out->len = 0;
    if ((rc = spruce__sbuf_put(out, "", 0)))
        return rc;
    for (i = 0; i < (*toks)->n && !rc; i++) {
        if (!d && i && (rc = spruce__sbuf_put(out, " ", 1))) /* no decoder: joined by spaces */
            break;
        rc = spruce__sbuf_put(out, (*toks)->buf.s + (*toks)->off[i], (*toks)->len[i]);
    }
    return rc;
}
