/* bpe.c: the BPE model as tokenizers/src/models/bpe/model.rs and word.rs
 * define it: each character of a pre-token is a symbol (its vocabulary id, or
 * its bytes' <0xXX> ids with byte_fallback, or unk_token, fused with fuse_unk),
 * then the adjacent pair of lowest merge rank (the leftmost among equals) is
 * merged until none is left.  The pairs wait in a min-heap ordered by (rank,
 * position) over a doubly linked list of symbols, so a word of n characters
 * costs O(n log n): a whole megabyte between two added tokens is one word
 * for a tokenizer without a pre-tokenizer (Mistral).  ignore_merges: a
 * pre-token found whole in the vocabulary is that one id. */
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "text_internal.h"

struct bpe {
    strmap vocab;
    uint32_t *tok_off, *tok_len; /* id -> its string in vocab.keys (len UINT32_MAX: none) */
    uint32_t ntok;
    uint64_t *mkey; /* merges: (left << 32 | right) -> (rank, new id); UINT64_MAX empty */
    uint32_t *mrank, *mnew;
    size_t mcap;
    int ignore_merges, byte_fallback, fuse_unk;
    char *unk;       /* unk_token or NULL */
    size_t unk_len;
    int64_t byte_id[256]; /* <0xXX> ids, -1 when absent */
    uint64_t *adj;        /* every (c1 << 32 | c2) of adjacent characters in a token */
    size_t adjcap;
};

typedef struct {
    uint32_t c, len;
    int32_t prev, next;
} symbol;

typedef struct {
    uint32_t rank, pos, new_id;
} merge;

struct bpe_work {
    int64_t *cp; /* the character of each initial symbol, -1 for bytes and unk */
    symbol *sym;
    size_t nsym, capsym;
    merge *heap;
    size_t nheap, capheap;
};

int spruce__idvec_push(idvec *v, uint32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        uint32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory for %zu ids", cap);
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return 0;
}

static size_t mslot(const bpe *m, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 20) & (m->mcap - 1);
    while (m->mkey[i] != UINT64_MAX && m->mkey[i] != key)
        i = (i + 1) & (m->mcap - 1);
    return i;
}

static int merge_get(const bpe *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *new_id)
{
    size_t i;
    if (!m->mcap)
        return 0;
    i = mslot(m, (uint64_t)a << 32 | b);
    if (m->mkey[i] == UINT64_MAX)
        return 0;
    *rank = m->mrank[i];
    *new_id = m->mnew[i];
    return 1;
}

const strmap *spruce__bpe_vocab(const bpe *m) { return &m->vocab; }
uint32_t spruce__bpe_size(const bpe *m) { return m->ntok; }

/* A newline is a wall for merging when no token longer than one character
 * holds it: every merge makes a token, so none joins the newline to its
 * neighbours, and the two sides of it merge exactly as they would alone.
 * ignore_merges (a whole word found in the vocabulary is one id) and fused
 * unknowns (runs of unk become one) look at the whole word: no wall. */
int spruce__bpe_newline_wall(const bpe *m)
{
    uint32_t id;
    if (m->ignore_merges || (m->fuse_unk && !m->byte_fallback))
        return 0;
    for (id = 0; id < m->ntok; id++) {
        const char *k = m->vocab.keys.s + m->tok_off[id];
        if (m->tok_len[id] != UINT32_MAX && m->tok_len[id] > 1 && memchr(k, '\n', m->tok_len[id]))
            return 0;
    }
    return 1;
}

const char *spruce__bpe_token(const bpe *m, uint32_t id, size_t *len)
{
    if (id >= m->ntok || m->tok_len[id] == UINT32_MAX)
        return NULL;
    *len = m->tok_len[id];
    return m->vocab.keys.s + m->tok_off[id];
}

void spruce__bpe_free(bpe *m)
{
    if (!m)
        return;
    spruce__strmap_free(&m->vocab);
    free(m->tok_off);
    free(m->tok_len);
    free(m->mkey);
    free(m->mrank);
    free(m->mnew);
    free(m->adj);
    free(m->unk);
    free(m);
}

static size_t adj_slot(const bpe *m, uint64_t key)
{
    size_t i = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & (m->adjcap - 1);
    while (m->adj[i] != UINT64_MAX && m->adj[i] != key)
        i = (i + 1) & (m->adjcap - 1);
    return i;
}

static int adjacent_in_vocab(const bpe *m, uint32_t a, uint32_t b)
{
    uint64_t key = (uint64_t)a << 32 | b;
    return m->adj[adj_slot(m, key)] == key;
}

/* The pairs of adjacent characters of every token.  A word may be cut
 * between two characters that no token holds side by side: every symbol is
 * a token, so no merge can ever reach across the cut, and the two sides
 * merge exactly as the whole would. */
static int build_adjacency(bpe *m)
{
    size_t id, npairs = 0, cap = 16;
    for (id = 0; id < m->ntok; id++)
        if (m->tok_len[id] != UINT32_MAX)
            npairs += m->tok_len[id];
    while (cap < 2 * npairs + 16)
        cap *= 2;
    if (!(m->adj = malloc(cap * sizeof *m->adj)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    memset(m->adj, 0xff, cap * sizeof *m->adj);
    m->adjcap = cap;
    for (id = 0; id < m->ntok; id++) {
        const char *s = m->vocab.keys.s + m->tok_off[id];
        size_t n = m->tok_len[id], i = 0;
        uint32_t prev = 0;
        int cl, have = 0;
        if (n == UINT32_MAX || spruce__utf8_check(s, n) != n)
            continue;
        while (i < n) {
            uint32_t c = spruce__utf8_get(s, n, i, &cl);
            if (have) {
                uint64_t key = (uint64_t)prev << 32 | c;
                m->adj[adj_slot(m, key)] = key;
            }
            prev = c;
            have = 1;
            i += (size_t)cl;
        }
    }
    return 0;
}

static int opt_null_or_empty(json_t *model, const char *key, const char *path)
{
    json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
        return 0;
    return spruce__seterr(SPRUCE_EUNSUPPORTED,
                          "%s: model: BPE %s %s is not supported (only null or \"\")", path, key,
                          json_is_string(v) ? json_string_value(v) : "(not a string)");
}

static int flag(json_t *model, const char *key)
{
    json_t *v = json_object_get(model, key);
    return json_is_true(v);
}

int spruce__bpe_parse(bpe **out, json_t *j, const bpe_lists *lists, const char *path)
{
    bpe *m;
    json_t *vocab = json_object_get(j, "vocab"), *merges = json_object_get(j, "merges"), *v;
    bpe_lists own = {0};
    const bpe_lists *l = lists;
    size_t r, nm, cap = 16;
    uint32_t maxid = 0;
    sbuf cat = {0};
    int rc = 0;
    json_t *drop = json_object_get(j, "dropout");
    *out = NULL;
    if (!json_is_object(vocab))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: model.vocab: expected an object of token -> id",
                              path);
    if (merges && !json_is_array(merges))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: model.merges: expected an array", path);
    if (drop && !json_is_null(drop))
        return spruce__seterr(SPRUCE_EUNSUPPORTED,
                              "%s: model: BPE dropout is not supported (only null)", path);
    if ((rc = opt_null_or_empty(j, "continuing_subword_prefix", path)) ||
        (rc = opt_null_or_empty(j, "end_of_word_suffix", path)))
        return rc;
    m = calloc(1, sizeof *m);
    if (!m)
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    m->ignore_merges = flag(j, "ignore_merges");
    m->byte_fallback = flag(j, "byte_fallback");
    m->fuse_unk = flag(j, "fuse_unk");
    v = json_object_get(j, "unk_token");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: model.unk_token: expected a string or null",
                                path);
            goto done;
        }
        m->unk_len = json_string_length(v);
        if (!(m->unk = malloc(m->unk_len + 1))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            goto done;
        }
        memcpy(m->unk, json_string_value(v), m->unk_len + 1);
    }
    if (!l) {
        if ((rc = spruce__bpe_lists_from_json(&own, vocab, merges, path)))
            goto done;
        l = &own;
    }
    if ((rc = spruce__strmap_init(&m->vocab, l->nvocab)))
        goto done;
    for (r = 0; r < l->nvocab; r++)
        if ((rc = spruce__strmap_put(&m->vocab, l->s.s + l->v[3 * r], l->v[3 * r + 1],
                                     l->v[3 * r + 2])))
            goto done;
    /* a repeated key keeps its last id, as jansson's object does */
    for (r = 0; r < m->vocab.cap; r++)
        if (m->vocab.klen[r] != UINT32_MAX && m->vocab.val[r] > maxid)
            maxid = m->vocab.val[r];
    m->ntok = m->vocab.count ? maxid + 1 : 0;
    m->tok_off = malloc((m->ntok + 1) * sizeof *m->tok_off);
    m->tok_len = malloc((m->ntok + 1) * sizeof *m->tok_len);
    if (!m->tok_off || !m->tok_len) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory for %u tokens", m->ntok);
        goto done;
    }
    memset(m->tok_len, 0xff, (m->ntok + 1) * sizeof *m->tok_len);
    for (r = 0; r < m->vocab.cap; r++)
        if (m->vocab.klen[r] != UINT32_MAX) {
            m->tok_off[m->vocab.val[r]] = m->vocab.off[r];
            m->tok_len[m->vocab.val[r]] = m->vocab.klen[r];
        }
    for (r = 0; r < 256; r++) {
        char code[8];
        uint32_t id;
        snprintf(code, sizeof code, "<0x%02X>", (unsigned)r);
        m->byte_id[r] = spruce__strmap_get(&m->vocab, code, 6, &id) == 0 ? (int64_t)id : -1;
    }
    if ((rc = build_adjacency(m)))
        goto done;
    nm = l->nmerge;
    while (cap < 2 * nm + 16)
        cap *= 2;
    m->mcap = cap;
    m->mkey = malloc(cap * sizeof *m->mkey);
    m->mrank = malloc(cap * sizeof *m->mrank);
    m->mnew = malloc(cap * sizeof *m->mnew);
    if (!m->mkey || !m->mrank || !m->mnew) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory for %zu merges", nm);
        goto done;
    }
    memset(m->mkey, 0xff, cap * sizeof *m->mkey);
    for (r = 0; r < nm; r++) {
        const char *a = l->s.s + l->m[4 * r], *b = l->s.s + l->m[4 * r + 2];
        size_t na = l->m[4 * r + 1], nb = l->m[4 * r + 3], s;
        uint32_t ia, ib, inew;
        if (spruce__strmap_get(&m->vocab, a, na, &ia) != 0 ||
            spruce__strmap_get(&m->vocab, b, nb, &ib) != 0) {
            int left = spruce__strmap_get(&m->vocab, a, na, &ia) != 0;
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: model.merges[%zu] ('%.*s', '%.*s'): token '%.*s' is not in the vocabulary",
                                path, r, (int)na, a, (int)nb, b, left ? (int)na : (int)nb,
                                left ? a : b);
            goto done;
        }
        cat.len = 0;
        if ((rc = spruce__sbuf_put(&cat, a, na)) || (rc = spruce__sbuf_put(&cat, b, nb)))
            goto done;
        if (spruce__strmap_get(&m->vocab, cat.s, cat.len, &inew) != 0) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: model.merges[%zu] ('%.*s', '%.*s'): the merged token '%s' is not in the vocabulary",
                                path, r, (int)na, a, (int)nb, b, cat.s);
            goto done;
        }
        s = mslot(m, (uint64_t)ia << 32 | ib);
        m->mkey[s] = (uint64_t)ia << 32 | ib; /* a repeated pair: the later rank wins */
        m->mrank[s] = (uint32_t)r;
        m->mnew[s] = inew;
    }
done:
    spruce__sbuf_free(&cat);
    spruce__bpe_lists_free(&own);
    if (rc) {
        spruce__bpe_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void spruce__bpe_work_free(bpe_work *w)
{
    if (!w)
        return;
    free(w->sym);
    free(w->cp);
    free(w->heap);
    free(w);
}

static int add_symbol(bpe_work *w, uint32_t c, uint32_t len, int64_t cp)
{
    symbol *s;
    if (w->nsym == w->capsym) {
        size_t cap = w->capsym ? 2 * w->capsym : 64;
        symbol *p = realloc(w->sym, cap * sizeof *p);
        int64_t *q;
        if (!p)
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        w->sym = p;
        if (!(q = realloc(w->cp, cap * sizeof *q)))
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        w->cp = q;
        w->capsym = cap;
    }
    w->cp[w->nsym] = cp;
    s = &w->sym[w->nsym];
    s->c = c;
    s->len = len;
    s->prev = (int32_t)w->nsym - 1;
    s->next = -1;
    if (w->nsym)
        w->sym[w->nsym - 1].next = (int32_t)w->nsym;
    w->nsym++;
    return 0;
}

/* The initial symbols of s: merge_word() of model.rs before merge_all(). */
static int initial_symbols(const bpe *m, bpe_work *w, const char *s, size_t n)
{
    size_t i = 0;
    int rc, have_unk = 0;
    uint32_t unk_id = 0, unk_len = 0;
    w->nsym = 0;
    while (i < n) {
        int cl;
        uint32_t id, c = spruce__utf8_get(s, n, i, &cl);
        if (spruce__strmap_get(&m->vocab, s + i, (size_t)cl, &id) == 0) {
            if (have_unk && (rc = add_symbol(w, unk_id, unk_len, -1)))
                return rc;
            have_unk = 0;
            if ((rc = add_symbol(w, id, (uint32_t)cl, (int64_t)c)))
                return rc;
        } else {
            int k, all = m->byte_fallback;
            for (k = 0; all && k < cl; k++)
                all = m->byte_id[(unsigned char)s[i + k]] >= 0;
            if (all) { /* model.rs adds the bytes without flushing a pending unk */
                for (k = 0; k < cl; k++)
                    if ((rc = add_symbol(w, (uint32_t)m->byte_id[(unsigned char)s[i + k]], 1, -1)))
                        return rc;
            } else if (m->unk) {
                uint32_t uid;
                if (have_unk && m->fuse_unk)
                    unk_len += (uint32_t)cl;
                else {
                    if (spruce__strmap_get(&m->vocab, m->unk, m->unk_len, &uid) != 0)
                        return spruce__seterr(SPRUCE_EFORMAT,
                                              "tokenizer: model.unk_token '%s' is not in the vocabulary",
                                              m->unk);
                    if (have_unk && (rc = add_symbol(w, unk_id, unk_len, -1)))
                        return rc;
                    have_unk = 1;
                    unk_id = uid;
                    unk_len = (uint32_t)cl;
                }
            } /* no unk_token: the character is dropped, as model.rs does */
        }
        i += (size_t)cl;
    }
    if (have_unk && (rc = add_symbol(w, unk_id, unk_len, -1)))
        return rc;
    return 0;
}

static int less(const merge *a, const merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

/* A 4-ary min-heap (as word.rs's QuaternaryHeap): half the levels of a
 * binary one, and the four children of a node share a cache line or two. */
static void sift_down(merge *h, size_t n, size_t i)
{
    merge x = h[i];
    for (;;) {
        size_t c = 4 * i + 1, s = c, k;
        if (c >= n)
            break;
        for (k = c + 1; k < c + 4 && k < n; k++)
            if (less(&h[k], &h[s]))
                s = k;
        if (!less(&h[s], &x))
            break;
        h[i] = h[s];
        i = s;
    }
    h[i] = x;
}

static int heap_reserve(bpe_work *w, size_t need)
{
    if (need > w->capheap) {
        size_t cap = w->capheap ? w->capheap : 64;
        merge *p;
        while (cap < need)
            cap *= 2;
        if (!(p = realloc(w->heap, cap * sizeof *p)))
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        w->heap = p;
        w->capheap = cap;
    }
    return 0;
}

static int heap_push(bpe_work *w, merge e)
{
    size_t i;
    int rc;
    if ((rc = heap_reserve(w, w->nheap + 1)))
        return rc;
    i = w->nheap++;
    while (i && less(&e, &w->heap[(i - 1) / 4])) {
        w->heap[i] = w->heap[(i - 1) / 4];
        i = (i - 1) / 4;
    }
    w->heap[i] = e;
    return 0;
}

/* merge_all() of word.rs on the symbols [lo, hi), a list of their own. */
static int merge_range(const bpe *m, bpe_work *w, size_t lo, size_t hi)
{
    size_t i;
    int rc;
    merge e;
    symbol *sy;
    w->nheap = 0;
    if ((rc = heap_reserve(w, hi - lo + 1)))
        return rc;
    w->sym[lo].prev = -1;
    w->sym[hi - 1].next = -1;
    for (i = lo; i + 1 < hi; i++)
        if (merge_get(m, w->sym[i].c, w->sym[i + 1].c, &e.rank, &e.new_id)) {
            e.pos = (uint32_t)i;
            w->heap[w->nheap++] = e;
        }
    for (i = w->nheap / 4 + 1; i-- > 0;) /* heapify in O(n) */
        if (i < w->nheap)
            sift_down(w->heap, w->nheap, i);
    sy = w->sym;
    while (w->nheap) {
        merge top = w->heap[0];
        uint32_t rank, nid;
        symbol right;
        int32_t nx;
        w->heap[0] = w->heap[--w->nheap];
        sift_down(w->heap, w->nheap, 0);
        if (sy[top.pos].len == 0 || sy[top.pos].next == -1)
            continue;
        right = sy[sy[top.pos].next];
        /* an entry made stale by an earlier merge */
        if (!merge_get(m, sy[top.pos].c, right.c, &rank, &nid) || nid != top.new_id)
            continue;
        sy[sy[top.pos].next].len = 0;
        sy[top.pos].c = top.new_id;
        sy[top.pos].len += right.len;
        sy[top.pos].next = right.next;
        if (right.next >= 0)
            sy[right.next].prev = (int32_t)top.pos;
        if (sy[top.pos].prev >= 0 &&
            merge_get(m, sy[sy[top.pos].prev].c, sy[top.pos].c, &e.rank, &e.new_id)) {
            e.pos = (uint32_t)sy[top.pos].prev;
            if ((rc = heap_push(w, e)))
                return rc;
        }
        nx = sy[top.pos].next;
        if (nx >= 0 && merge_get(m, sy[top.pos].c, sy[nx].c, &e.rank, &e.new_id)) {
            e.pos = top.pos;
            if ((rc = heap_push(w, e)))
                return rc;
        }
    }
    return 0;
}

/* merge_all() of word.rs, cutting a long word where no merge can reach
 * across (build_adjacency): the same result with small heaps. */
static int merge_all(const bpe *m, bpe_work *w)
{
    size_t lo = 0, i;
    int rc;
    if (!w->nsym)
        return 0;
    if (w->nsym > 64)
        for (i = 1; i < w->nsym; i++)
            if (w->cp[i - 1] >= 0 && w->cp[i] >= 0 &&
                !adjacent_in_vocab(m, (uint32_t)w->cp[i - 1], (uint32_t)w->cp[i])) {
                if ((rc = merge_range(m, w, lo, i)))
                    return rc;
                lo = i;
            }
    return merge_range(m, w, lo, w->nsym);
}

int spruce__bpe_encode(const bpe *m, bpe_work **wp, const char *s, size_t n, idvec *ids)
{
    uint32_t id;
    size_t i;
    int rc;
    if (!n)
        return 0;
    if (m->ignore_merges && spruce__strmap_get(&m->vocab, s, n, &id) == 0)
        return spruce__idvec_push(ids, id);
    if (!*wp && !(*wp = calloc(1, sizeof **wp)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    if ((rc = initial_symbols(m, *wp, s, n)) || (rc = merge_all(m, *wp)))
        return rc;
    for (i = 0; i < (*wp)->nsym; i++)
        if ((*wp)->sym[i].len && (rc = spruce__idvec_push(ids, (*wp)->sym[i].c)))
            return rc;
    return 0;
}

/* The obviously right version: find the lowest-rank adjacent pair (the
 * leftmost of equals), merge it, start again.  Quadratic; tests only. */
int spruce__bpe_encode_naive(const bpe *m, const char *s, size_t n, idvec *ids)
{
    bpe_work *w = NULL;
    uint32_t *c, id;
    size_t k = 0, i;
    int rc;
    if (!n)
        return 0;
    if (m->ignore_merges && spruce__strmap_get(&m->vocab, s, n, &id) == 0)
        return spruce__idvec_push(ids, id);
    if (!(w = calloc(1, sizeof *w)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    if ((rc = initial_symbols(m, w, s, n)))
        goto done;
    c = malloc((w->nsym + 1) * sizeof *c);
    if (!c) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    for (i = 0; i < w->nsym; i++)
        c[i] = w->sym[i].c;
    k = w->nsym;
    for (;;) {
        uint32_t best = UINT32_MAX, bnew = 0, r, nid;
        size_t at = 0;
        for (i = 0; i + 1 < k; i++)
            if (merge_get(m, c[i], c[i + 1], &r, &nid) && r < best) {
                best = r;
                bnew = nid;
                at = i;
            }
        if (best == UINT32_MAX)
            break;
        c[at] = bnew;
        memmove(c + at + 1, c + at + 2, (k - at - 2) * sizeof *c);
        k--;
    }
    for (i = 0; i < k && !rc; i++)
        rc = spruce__idvec_push(ids, c[i]);
    free(c);
done:
    spruce__bpe_work_free(w);
    return rc;
}
