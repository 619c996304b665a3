/* bpe_lists.c: model.vocab and model.merges of a tokenizer.json as two flat
 * lists, the input of the BPE model (bpe.c).  Two readers fill them alike:
 *
 *   from jansson's tree   every file; its messages name a malformed entry
 *   from the file's text  the common case, without building a jansson value
 *                         for each of Llama 3's 128k tokens and 280k merges
 *                         (most of the load time)
 *
 * The text reader walks the top-level object and "model" by the JSON grammar
 * (RFC 8259), reads vocab (string -> non-negative integer) and merges ("a b"
 * strings or ["a", "b"] pairs) strictly, and replaces those two values in
 * the text by {} and [] plus the newlines they held, so that jansson then
 * parses the rest with every line number unchanged.  Anything it does not fully understand
 * (an escape it cannot decode, \u0000, a repeated "model", "vocab" or
 * "merges", a number that is not a plain integer, invalid UTF-8, ...) leaves
 * the text as it was and the tree reader takes over, with jansson's and
 * bpe.c's messages.  A token repeated inside vocab is listed twice; bpe.c
 * keeps its last id, as jansson's object would. */
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "text_internal.h"

static int grow(uint32_t **v, size_t *cap, size_t need, size_t width)
{
    uint32_t *p;
    size_t c = *cap ? *cap : 1024;
    if (need <= *cap)
        return 0;
    while (c < need)
        c *= 2;
    if (!(p = realloc(*v, c * width * sizeof *p)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory for %zu entries", c);
    *v = p;
    *cap = c;
    return 0;
}

static int add_string(bpe_lists *l, const char *s, size_t n, uint32_t *off)
{
    if (l->s.len + n + 1 >= UINT32_MAX)
        return spruce__seterr(SPRUCE_EINVAL, "tokenizer: vocabulary strings exceed 4 GiB");
    *off = (uint32_t)l->s.len;
    return spruce__sbuf_put(&l->s, s, n) ? SPRUCE_ENOMEM
                                          : spruce__sbuf_put(&l->s, "", 1); /* keeps a NUL */
}

int spruce__bpe_lists_vocab(bpe_lists *l, const char *k, size_t n, uint32_t id)
{
    uint32_t off;
    int rc;
    if ((rc = grow(&l->v, &l->capv, l->nvocab + 1, 3)) || (rc = add_string(l, k, n, &off)))
        return rc;
    l->v[3 * l->nvocab] = off;
    l->v[3 * l->nvocab + 1] = (uint32_t)n;
    l->v[3 * l->nvocab + 2] = id;
    l->nvocab++;
    return 0;
}

int spruce__bpe_lists_merge(bpe_lists *l, const char *a, size_t na, const char *b, size_t nb)
{
    uint32_t oa, ob;
    int rc;
    if ((rc = grow(&l->m, &l->capm, l->nmerge + 1, 4)) || (rc = add_string(l, a, na, &oa)) ||
        (rc = add_string(l, b, nb, &ob)))
        return rc;
    l->m[4 * l->nmerge] = oa;
    l->m[4 * l->nmerge + 1] = (uint32_t)na;
    l->m[4 * l->nmerge + 2] = ob;
    l->m[4 * l->nmerge + 3] = (uint32_t)nb;
    l->nmerge++;
    return 0;
}

void spruce__bpe_lists_free(bpe_lists *l)
{
    if (!l)
        return;
    spruce__sbuf_free(&l->s);
    free(l->v);
    free(l->m);
    memset(l, 0, sizeof *l);
}

/* ---- the text reader ---------------------------------------------------------- */

typedef struct {
    const char *p, *end;
    sbuf tmp; /* the string read last, decoded */
} scan;

static void ws(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int hex4(const char *p, const char *end, uint32_t *v)
{
    int i;
    *v = 0;
    if (end - p < 4)
        return -1;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            *v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            *v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    return 0;
}

/* A JSON string at s->p (the opening quote) decoded into s->tmp; -1 for
 * anything the tree reader should judge, SPRUCE_ENOMEM. */
static int read_string(scan *s)
{
    const char *p = s->p + 1, *run;
    s->tmp.len = 0;
    if (s->p >= s->end || *s->p != '"')
        return -1;
    for (;;) {
        run = p;
        while (p < s->end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (p > run && spruce__sbuf_put(&s->tmp, run, (size_t)(p - run)))
            return SPRUCE_ENOMEM;
        if (p >= s->end || (unsigned char)*p < 0x20)
            return -1;
        if (*p == '"')
            break;
        /* an escape */
        if (++p >= s->end)
            return -1;
        {
            char c = *p++, out[4];
            uint32_t u, lo;
            int n = 1;
            switch (c) {
            case '"': case '\\': case '/': out[0] = c; break;
            case 'b': out[0] = '\b'; break;
            case 'f': out[0] = '\f'; break;
            case 'n': out[0] = '\n'; break;
            case 'r': out[0] = '\r'; break;
            case 't': out[0] = '\t'; break;
            case 'u':
                if (hex4(p, s->end, &u))
                    return -1;
                p += 4;
                if (u >= 0xdc00 && u <= 0xdfff)
                    return -1;
                if (u >= 0xd800 && u <= 0xdbff) { /* a surrogate pair */
                    if (s->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, s->end, &lo) ||
                        lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    p += 6;
                    u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (u == 0)
                    return -1; /* a NUL: the tree reader's C strings decide */
                n = spruce__utf8_put(u, out);
                break;
            default:
                return -1;
            }
            if (spruce__sbuf_put(&s->tmp, out, (size_t)n))
                return SPRUCE_ENOMEM;
        }
    }
    s->p = p + 1;
    return spruce__utf8_check(s->tmp.s ? s->tmp.s : "", s->tmp.len) == s->tmp.len ? 0 : -1;
}

/* Skip any JSON value (loosely: only strings and nesting are followed; the
 * jansson parse of the compacted text judges the rest). */
static int skip_value(scan *s)
{
    long depth = 0;
    ws(s);
    do {
        if (s->p >= s->end)
            return -1;
        if (*s->p == '"') {
            const char *p = s->p + 1;
            while (p < s->end && *p != '"')
                p += *p == '\\' ? 2 : 1;
            if (p >= s->end)
                return -1;
            s->p = p + 1;
        } else if (*s->p == '{' || *s->p == '[') {
            depth++;
            s->p++;
        } else if (*s->p == '}' || *s->p == ']') {
            if (--depth < 0)
                return -1;
            s->p++;
        } else if (depth == 0) { /* a scalar */
            while (s->p < s->end && !strchr(",}] \t\r\n", *s->p))
                s->p++;
            return 0;
        } else {
            s->p++;
        }
    } while (depth > 0);
    return 0;
}

/* Walk the object at s->p; for each member call fn at its value (fn leaves
 * s->p after the value).  -1 on anything unexpected. */
typedef int (*member_fn)(scan *s, void *ctx);

static int walk_object(scan *s, member_fn fn, void *ctx)
{
    int rc;
    ws(s);
    if (s->p >= s->end || *s->p != '{')
        return -1;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        ws(s);
        if ((rc = read_string(s)))
            return rc;
        ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        ws(s);
        if ((rc = fn(s, ctx)))
            return rc;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

typedef struct {
    bpe_lists *l;
    const char *at[2], *to[2]; /* the spans of vocab and merges */
    int seen_model, seen[2];
} text_ctx;

static int vocab_member(scan *s, void *vctx)
{
    text_ctx *c = vctx;
    const char *p = s->p;
    uint64_t id = 0;
    if (p >= s->end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < s->end && p[1] >= '0' &&
                                                  p[1] <= '9'))
        return -1;
    while (p < s->end && *p >= '0' && *p <= '9') {
        id = 10 * id + (uint64_t)(*p++ - '0');
        if (id >= UINT32_MAX)
            return -1;
    }
    if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return -1; /* a real: the tree reader says why it is no id */
    s->p = p;
    return spruce__bpe_lists_vocab(c->l, s->tmp.s, s->tmp.len, (uint32_t)id);
}

static int read_merges(scan *s, text_ctx *c)
{
    sbuf first = {0};
    int rc = -1;
    s->p++; /* '[' */
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        ws(s);
        if (s->p < s->end && *s->p == '"') {
            const char *sp;
            if ((rc = read_string(s)))
                goto done;
            rc = -1;
            if (!(sp = memchr(s->tmp.s, ' ', s->tmp.len)))
                goto done;
            if ((rc = spruce__bpe_lists_merge(c->l, s->tmp.s, (size_t)(sp - s->tmp.s), sp + 1,
                                              s->tmp.len - (size_t)(sp - s->tmp.s) - 1)))
                goto done;
        } else if (s->p < s->end && *s->p == '[') {
            s->p++;
            ws(s);
            first.len = 0;
            if ((rc = read_string(s)) ||
                (rc = spruce__sbuf_put(&first, s->tmp.s, s->tmp.len) ? SPRUCE_ENOMEM : 0))
                goto done;
            rc = -1;
            ws(s);
            if (s->p >= s->end || *s->p != ',')
                goto done;
            s->p++;
            ws(s);
            if ((rc = read_string(s)))
                goto done;
            rc = -1;
            ws(s);
            if (s->p >= s->end || *s->p != ']')
                goto done;
            s->p++;
            if ((rc = spruce__bpe_lists_merge(c->l, first.s, first.len, s->tmp.s, s->tmp.len)))
                goto done;
        } else {
            goto done;
        }
        rc = -1;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            rc = 0;
        }
        goto done;
    }
done:
    spruce__sbuf_free(&first);
    return rc;
}

static int model_member(scan *s, void *vctx)
{
    text_ctx *c = vctx;
    int k = s->tmp.len == 5 && !memcmp(s->tmp.s, "vocab", 5)    ? 0
            : s->tmp.len == 6 && !memcmp(s->tmp.s, "merges", 6) ? 1
                                                                 : -1;
    int rc;
    if (k < 0)
        return skip_value(s);
    if (c->seen[k]++)
        return -1; /* a repeated key: jansson keeps the last, let it */
    c->at[k] = s->p;
    if (k == 0)
        rc = walk_object(s, vocab_member, c);
    else
        rc = s->p < s->end && *s->p == '[' ? read_merges(s, c) : -1;
    c->to[k] = s->p;
    return rc;
}

static int top_member(scan *s, void *vctx)
{
    text_ctx *c = vctx;
    if (s->tmp.len != 5 || memcmp(s->tmp.s, "model", 5))
        return skip_value(s);
    if (c->seen_model++)
        return -1;
    return walk_object(s, model_member, c);
}

int spruce__bpe_lists_from_text(bpe_lists *l, char *text, size_t *n)
{
    scan s = {text, text + *n, {0}};
    text_ctx c;
    char *w, *r;
    int rc, k, order[2] = {0, 1};
    memset(l, 0, sizeof *l);
    memset(&c, 0, sizeof c);
    c.l = l;
    rc = walk_object(&s, top_member, &c);
    spruce__sbuf_free(&s.tmp);
    if (rc || !c.seen[0]) {
        spruce__bpe_lists_free(l);
        return rc == SPRUCE_ENOMEM ? rc : 0;
    }
    /* Compact in place: each value becomes {} or [] and the newlines it held
     * (jansson's lexer would otherwise walk megabytes of blanks). */
    if (c.seen[1] && c.at[1] < c.at[0]) {
        order[0] = 1;
        order[1] = 0;
    }
    w = r = text;
    for (k = 0; k < 2; k++) {
        int i = order[k];
        const char *p;
        size_t nl = 0, keep;
        if (!c.seen[i])
            continue;
        keep = (size_t)(c.at[i] - r);
        memmove(w, r, keep);
        w += keep;
        for (p = c.at[i]; p < c.to[i]; p++)
            nl += *p == '\n';
        *w++ = i ? '[' : '{';
        *w++ = i ? ']' : '}';
        memset(w, '\n', nl);
        w += nl;
        r = text + (c.to[i] - text);
    }
    memmove(w, r, (size_t)(text + *n - r));
    w += text + *n - r;
    *n = (size_t)(w - text);
    l->have_merges = c.seen[1];
    l->from_text = 1;
    return 1;
}

/* ---- the tree reader ---------------------------------------------------------- */

/* merges[r]: "a b" (split at the first space) or ["a", "b"] */
static int merge_halves(json_t *e, size_t r, const char *path, const char **a, size_t *na,
                        const char **b, size_t *nb)
{
    if (json_is_string(e)) {
        const char *s = json_string_value(e), *sp = memchr(s, ' ', json_string_length(e));
        if (!sp)
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: model.merges[%zu] '%s' is not two tokens separated by a space",
                                  path, r, s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = json_string_length(e) - *na - 1;
        return 0;
    }
    if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
        json_is_string(json_array_get(e, 1))) {
        *a = json_string_value(json_array_get(e, 0));
        *na = json_string_length(json_array_get(e, 0));
        *b = json_string_value(json_array_get(e, 1));
        *nb = json_string_length(json_array_get(e, 1));
        return 0;
    }
    return spruce__seterr(SPRUCE_EFORMAT,
                          "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, r);
}

int spruce__bpe_lists_from_json(bpe_lists *l, json_t *vocab, json_t *merges, const char *path)
{
    const char *key;
    json_t *v;
    size_t r;
    int rc = 0;
    memset(l, 0, sizeof *l);
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= (json_int_t)UINT32_MAX) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: model.vocab['%s']: expected an id in [0, 2^32-1)",
                                path, key);
            goto done;
        }
        if ((rc = spruce__bpe_lists_vocab(l, key, strlen(key), (uint32_t)id)))
            goto done;
    }
    l->have_merges = merges != NULL;
    for (r = 0; merges && r < json_array_size(merges); r++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if ((rc = merge_halves(json_array_get(merges, r), r, path, &a, &na, &b, &nb)) ||
            (rc = spruce__bpe_lists_merge(l, a, na, b, nb)))
            goto done;
    }
done:
    if (rc)
        spruce__bpe_lists_free(l);
    return rc;
}
