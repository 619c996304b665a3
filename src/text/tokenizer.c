/* tokenizer.c: a tokenizer.json read and run as tokenizers/src/tokenizer/
 * (mod.rs, serialization.rs, added_vocabulary.rs) and processors/
 * (template.rs, sequence.rs, byte_level.rs) define it.
 *
 * Encoding: the added tokens that are not `normalized` are split out of the
 * raw text (leftmost-longest, with single_word, lstrip and rstrip); every
 * other stretch is normalized, then the `normalized` added tokens are split
 * out of it; the remaining pieces are pre-tokenized and each is a BPE word;
 * the post-processor adds its special tokens when add_special is set. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "spruce_error.h"
#include "spruce_files.h"
#include "text_internal.h"

typedef struct {
    char *content;
    size_t len;
    uint32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} added_token;

/* A byte trie of added token contents (sibling lists). */
typedef struct {
    unsigned char byte;
    int32_t child, sibling;
    int32_t token; /* index into added[], -1 when no token ends here */
} trie_node;

typedef struct {
    trie_node *v;
    size_t n, cap;
} trie;

/* One post-processor template: the ids before and after the sequence. */
typedef struct {
    uint32_t *pre, *post;
    size_t npre, npost;
} template;

struct spruce_tokenizer {
    char *path;
    normalizer *norm;
    pretok *pre;
    bpe *model;
    decoder *dec;
    added_token *added;
    size_t nadded;
    trie raw_trie, norm_trie; /* the non-normalized and the normalized added tokens */
    template *tpl;
    size_t ntpl;
    uint32_t size;
    int32_t *added_of_id;
    int64_t bos, eos;
    int cuttable; /* stretches may be encoded in parts (see encode_stretch) */
};

/* ---- the trie ---- */

static int32_t trie_node_new(trie *t, unsigned char b)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        trie_node *p = realloc(t->v, cap * sizeof *p);
        if (!p)
            return -1;
        t->v = p;
        t->cap = cap;
    }
    t->v[t->n].byte = b;
    t->v[t->n].child = t->v[t->n].sibling = t->v[t->n].token = -1;
    return (int32_t)t->n++;
}

static int trie_add(trie *t, const char *s, size_t n, int32_t token)
{
    int32_t cur;
    size_t i;
    if (!t->n && trie_node_new(t, 0) < 0)
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    cur = 0;
    for (i = 0; i < n; i++) {
        int32_t c = t->v[cur].child;
        while (c >= 0 && t->v[c].byte != (unsigned char)s[i])
            c = t->v[c].sibling;
        if (c < 0) {
            if ((c = trie_node_new(t, (unsigned char)s[i])) < 0)
                return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            t->v[c].sibling = t->v[cur].child;
            t->v[cur].child = c;
        }
        cur = c;
    }
    if (t->v[cur].token < 0) /* the same content twice: the first wins */
        t->v[cur].token = token;
    return 0;
}

/* The longest token starting at s[i]: its index and *end, or -1. */
static int32_t trie_longest(const trie *t, const char *s, size_t n, size_t i, size_t *end)
{
    int32_t cur = 0, best = -1;
    if (!t->n)
        return -1;
    while (i < n) {
        int32_t c = t->v[cur].child;
        while (c >= 0 && t->v[c].byte != (unsigned char)s[i])
            c = t->v[c].sibling;
        if (c < 0)
            break;
        cur = c;
        i++;
        if (t->v[cur].token >= 0) {
            best = t->v[cur].token;
            *end = i;
        }
    }
    return best;
}

/* ---- loading ---- */

static int parse_added(spruce_tokenizer *t, json_t *a)
{
    size_t i;
    int rc;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: added_tokens: expected an array", t->path);
    if (!(t->added = calloc(json_array_size(a) + 1, sizeof *t->added)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    for (i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i), *id = json_object_get(e, "id"),
               *c = json_object_get(e, "content");
        added_token *k = &t->added[t->nadded];
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (json_int_t)UINT32_MAX || !json_is_string(c) ||
            !json_string_length(c))
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: added_tokens[%zu]: expected an \"id\" in [0, 2^32-1) and a "
                                  "non-empty \"content\"",
                                  t->path, i);
        k->id = (uint32_t)json_integer_value(id);
        k->len = json_string_length(c);
        if (!(k->content = malloc(k->len + 1)))
            return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        memcpy(k->content, json_string_value(c), k->len + 1);
        k->special = json_is_true(json_object_get(e, "special"));
        /* AddedToken's default: normalized unless special */
        k->normalized = json_object_get(e, "normalized")
                            ? json_is_true(json_object_get(e, "normalized"))
                            : !k->special;
        k->lstrip = json_is_true(json_object_get(e, "lstrip"));
        k->rstrip = json_is_true(json_object_get(e, "rstrip"));
        k->single_word = json_is_true(json_object_get(e, "single_word"));
        { /* a content the model has keeps the model's id (AddedVocabulary::add_tokens) */
            uint32_t mid;
            if (spruce__strmap_get(spruce__bpe_vocab(t->model), k->content, k->len, &mid) == 0)
                k->id = mid;
        }
        t->nadded++;
        if (!k->normalized)
            rc = trie_add(&t->raw_trie, k->content, k->len, (int32_t)(t->nadded - 1));
        else { /* matched in normalized text as its normalized form (refresh_added_tokens) */
            sbuf nc = {0};
            pcre2_match_data *md = pcre2_match_data_create(4, NULL);
            if (!md)
                return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            rc = spruce__normalize(t->norm, md, k->content, k->len, &nc);
            pcre2_match_data_free(md);
            if (!rc && nc.len)
                rc = trie_add(&t->norm_trie, nc.s, nc.len, (int32_t)(t->nadded - 1));
            spruce__sbuf_free(&nc);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int template_ids(spruce_tokenizer *t, json_t *specials, const char *name, uint32_t **v,
                        size_t *n)
{
    json_t *s = json_object_get(specials, name), *ids = json_object_get(s, "ids");
    size_t i;
    uint32_t *p;
    if (!json_is_array(ids))
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: post_processor TemplateProcessing: special token '%s' is not in "
                              "\"special_tokens\" with its \"ids\"",
                              t->path, name);
    p = realloc(*v, (*n + json_array_size(ids) + 1) * sizeof *p);
    if (!p)
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    *v = p;
    for (i = 0; i < json_array_size(ids); i++) {
        json_t *x = json_array_get(ids, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) >= (json_int_t)UINT32_MAX)
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: post_processor TemplateProcessing: special token '%s': "
                                  "ids[%zu] is not an id",
                                  t->path, name, i);
        p[(*n)++] = (uint32_t)json_integer_value(x);
    }
    return 0;
}

static int parse_post(spruce_tokenizer *t, json_t *j)
{
    const char *type;
    json_t *single, *specials;
    template *tp;
    size_t i;
    int rc, seen = 0;
    if (!j || json_is_null(j))
        return 0;
    type = json_string_value(json_object_get(j, "type"));
    if (type && !strcmp(type, "ByteLevel")) /* offsets only: nothing for ids */
        return 0;
    if (type && !strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a))
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: post_processor Sequence: no \"processors\" array", t->path);
        for (i = 0; i < json_array_size(a); i++)
            if ((rc = parse_post(t, json_array_get(a, i))))
                return rc;
        return 0;
    }
    if (!type || strcmp(type, "TemplateProcessing"))
        return spruce__seterr(SPRUCE_EUNSUPPORTED,
                              "%s: post_processor type '%s' is not supported (supported: "
                              "TemplateProcessing, ByteLevel, Sequence)",
                              t->path, type ? type : "(none)");
    single = json_object_get(j, "single");
    specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single))
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: post_processor TemplateProcessing: no \"single\" array", t->path);
    tp = realloc(t->tpl, (t->ntpl + 1) * sizeof *tp);
    if (!tp)
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    t->tpl = tp;
    tp = &t->tpl[t->ntpl++];
    memset(tp, 0, sizeof *tp);
    for (i = 0; i < json_array_size(single); i++) {
        json_t *e = json_array_get(single, i), *sp = json_object_get(e, "SpecialToken"),
               *sq = json_object_get(e, "Sequence");
        if (sp && json_is_string(json_object_get(sp, "id"))) {
            const char *name = json_string_value(json_object_get(sp, "id"));
            if ((rc = seen ? template_ids(t, specials, name, &tp->post, &tp->npost)
                           : template_ids(t, specials, name, &tp->pre, &tp->npre)))
                return rc;
        } else if (sq && !seen)
            seen = 1;
        else
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: post_processor TemplateProcessing: single[%zu] is neither a "
                                  "SpecialToken nor the one Sequence",
                                  t->path, i);
    }
    if (!seen)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: post_processor TemplateProcessing: \"single\" has no Sequence",
                              t->path);
    return 0;
}

/* bos_token / eos_token of tokenizer_config.json beside the file (a string or
 * {"content": ...}); a missing or unreadable file leaves them unknown. */
static void read_config(spruce_tokenizer *t, const char *dir)
{
    static const char *keys[2] = {"bos_token", "eos_token"};
    char *p = malloc(strlen(dir) + 32);
    json_t *j;
    int k;
    if (!p)
        return;
    sprintf(p, "%s/tokenizer_config.json", dir);
    j = json_load_file(p, JSON_DECODE_INT_AS_REAL, NULL); /* model_max_length can be 1e30 */
    free(p);
    for (k = 0; j && k < 2; k++) {
        json_t *v = json_object_get(j, keys[k]);
        const char *s = json_is_string(v) ? json_string_value(v)
                                          : json_string_value(json_object_get(v, "content"));
        if (s) {
            int64_t id = spruce_tokenizer_token_id(t, s, strlen(s));
            if (k == 0)
                t->bos = id;
            else
                t->eos = id;
        }
    }
    json_decref(j);
}

void spruce_tokenizer_free(spruce_tokenizer *t)
{
    size_t i;
    if (!t)
        return;
    spruce__normalizer_free(t->norm);
    spruce__pretok_free(t->pre);
    spruce__bpe_free(t->model);
    spruce__decoder_free(t->dec);
    for (i = 0; i < t->nadded; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->raw_trie.v);
    free(t->norm_trie.v);
    for (i = 0; i < t->ntpl; i++) {
        free(t->tpl[i].pre);
        free(t->tpl[i].post);
    }
    free(t->tpl);
    free(t->added_of_id);
    free(t->path);
    free(t);
}

/* The whole file into a malloc'ed buffer. */
static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    size_t n;
    if (!f)
        return spruce__seterr(spruce__errno_code(errno), "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return spruce__seterr(SPRUCE_ENOTREG, "%s: not a regular file", path);
    }
    if (!(*buf = malloc((size_t)st.st_size + 1))) {
        fclose(f);
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory for %lld bytes", path,
                              (long long)st.st_size);
    }
    n = fread(*buf, 1, (size_t)st.st_size, f);
    if (n != (size_t)st.st_size || ferror(f)) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return spruce__seterr(SPRUCE_EIO, "%s: short read (%zu of %lld bytes)", path, n,
                              (long long)st.st_size);
    }
    fclose(f);
    *len = n;
    return 0;
}

/* Whether a stretch between raw added tokens may be encoded in parts cut
 * before a '\n' that follows an ASCII letter or digit, with exactly the ids of
 * the whole: the normalizer acts on characters there, the cut is a boundary
 * of the pre-tokenizer's splits (or, with no pre-tokenizer, a newline is a
 * wall no merge crosses), and no normalized added token could straddle it. */
static int compute_cuttable(const spruce_tokenizer *t)
{
    size_t i;
    if (!spruce__normalizer_cuttable(t->norm))
        return 0;
    for (i = 0; i < t->nadded; i++)
        if (t->added[i].normalized &&
            (t->added[i].lstrip || t->added[i].rstrip ||
             memchr(t->added[i].content, '\n', t->added[i].len)))
            return 0;
    return t->pre ? spruce__pretok_cuttable(t->pre) : spruce__bpe_newline_wall(t->model);
}

static int refuse_nonnull(spruce_tokenizer *t, json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    if (v && !json_is_null(v))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "%s: %s is not supported (only null)", t->path,
                              key);
    return 0;
}

int spruce_tokenizer_load(const char *path, spruce_tokenizer **out)
{
    spruce_tokenizer *t;
    struct stat st;
    json_t *root = NULL, *model, *v;
    json_error_t je;
    bpe_lists lists = {0};
    char *dir = NULL, *text = NULL;
    size_t i, tlen = 0;
    int rc = 0;
    if (!path || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokenizer_load: NULL argument");
    *out = NULL;
    if (!(t = calloc(1, sizeof *t)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    t->bos = t->eos = -1;
    if (!(t->path = malloc(strlen(path) + 32))) {
        free(t);
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        sprintf(t->path, "%s/tokenizer.json", path);
    else
        strcpy(t->path, path);
    if (!(dir = malloc(strlen(t->path) + 2))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    strcpy(dir, t->path);
    if (strrchr(dir, '/'))
        *strrchr(dir, '/') = 0;
    else
        strcpy(dir, ".");
    if (stat(t->path, &st) != 0) {
        rc = spruce__seterr(SPRUCE_ENOTFOUND, "%s: no such file", t->path);
        goto done;
    }
    if ((rc = read_file(t->path, &text, &tlen)))
        goto done;
    /* vocab and merges straight from the text when it is plain (most of the
     * time goes to jansson's values for them otherwise), the rest by jansson */
    if ((rc = spruce__bpe_lists_from_text(&lists, text, &tlen)) < 0)
        goto done;
    rc = 0;
    root = json_loadb(text, tlen, JSON_ALLOW_NUL, &je); /* faster than jansson's getc() */
    free(text);
    text = NULL;
    if (!root) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: line %d column %d: %s", t->path, je.line,
                            je.column, je.text);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: expected a JSON object", t->path);
        goto done;
    }
    model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: no \"model\" object", t->path);
        goto done;
    }
    v = json_object_get(model, "type");
    if (v ? !json_is_string(v) || strcmp(json_string_value(v), "BPE")
          : !json_object_get(model, "merges")) {
        rc = spruce__seterr(SPRUCE_EUNSUPPORTED,
                            "%s: model type '%s' is not supported (supported: BPE)", t->path,
                            json_is_string(v) ? json_string_value(v) : "(none)");
        goto done;
    }
    if ((rc = refuse_nonnull(t, root, "truncation")) || (rc = refuse_nonnull(t, root, "padding")))
        goto done;
    if ((rc = spruce__bpe_parse(&t->model, model, lists.from_text ? &lists : NULL, t->path)))
        goto done;
    if ((v = json_object_get(root, "normalizer")) && !json_is_null(v) &&
        (rc = spruce__normalizer_parse(&t->norm, v, t->path)))
        goto done;
    if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v) &&
        (rc = spruce__pretok_parse(&t->pre, v, t->path)))
        goto done;
    if ((v = json_object_get(root, "decoder")) && !json_is_null(v) &&
        (rc = spruce__decoder_parse(&t->dec, v, t->path)))
        goto done;
    if ((rc = parse_post(t, json_object_get(root, "post_processor"))) ||
        (rc = parse_added(t, json_object_get(root, "added_tokens"))))
        goto done;
    t->size = spruce__bpe_size(t->model);
    for (i = 0; i < t->nadded; i++)
        if (t->added[i].id + 1 > t->size)
            t->size = t->added[i].id + 1;
    if (!(t->added_of_id = malloc(((size_t)t->size + 1) * sizeof *t->added_of_id))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    memset(t->added_of_id, 0xff, ((size_t)t->size + 1) * sizeof *t->added_of_id);
    for (i = t->nadded; i-- > 0;)
        t->added_of_id[t->added[i].id] = (int32_t)i;
    for (i = 0; i < t->ntpl; i++) {
        size_t k;
        for (k = 0; k < t->tpl[i].npre + t->tpl[i].npost; k++) {
            uint32_t id = k < t->tpl[i].npre ? t->tpl[i].pre[k] : t->tpl[i].post[k - t->tpl[i].npre];
            if (id >= t->size) {
                rc = spruce__seterr(SPRUCE_EFORMAT,
                                    "%s: post_processor: special token id %u is beyond the "
                                    "vocabulary (%u)",
                                    t->path, id, t->size);
                goto done;
            }
        }
    }
    read_config(t, dir);
    t->cuttable = compute_cuttable(t);
done:
    json_decref(root);
    spruce__bpe_lists_free(&lists);
    free(text);
    free(dir);
    if (rc) {
        spruce_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- queries ---- */

uint32_t spruce_tokenizer_vocab_size(const spruce_tokenizer *t) { return t->size; }
int64_t spruce_tokenizer_bos(const spruce_tokenizer *t) { return t->bos; }
int64_t spruce_tokenizer_eos(const spruce_tokenizer *t) { return t->eos; }

int64_t spruce_tokenizer_token_id(const spruce_tokenizer *t, const char *s, size_t n)
{
    size_t i;
    uint32_t id;
    for (i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, s, n))
            return t->added[i].id;
    if (spruce__strmap_get(spruce__bpe_vocab(t->model), s, n, &id) == 0)
        return id;
    return -1;
}

static const char *token_of(const spruce_tokenizer *t, uint32_t id, size_t *len)
{
    if (id < t->size && t->added_of_id[id] >= 0) {
        *len = t->added[t->added_of_id[id]].len;
        return t->added[t->added_of_id[id]].content;
    }
    return spruce__bpe_token(t->model, id, len);
}

const char *spruce_tokenizer_token(const spruce_tokenizer *t, uint32_t id)
{
    size_t len;
    return token_of(t, id, &len);
}

int spruce_tokenizer_is_special(const spruce_tokenizer *t, uint32_t id)
{
    return id < t->size && t->added_of_id[id] >= 0 && t->added[t->added_of_id[id]].special;
}

/* ---- encoding ---- */

static int is_word_char(uint32_t c) /* Rust regex \w */
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_PC || k == UTF8PROC_CATEGORY_NL || c == 0x200c || c == 0x200d;
}

static uint32_t last_char(const char *s, size_t n)
{
    size_t p = n - 1;
    int cl;
    while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80)
        p--;
    return spruce__utf8_get(s, n, p, &cl);
}


/* find_matches() of added_vocabulary.rs over s[0..n). */
static int find_added(const spruce_tokenizer *t, const trie *tr, const char *s, size_t n,
                      spans *out)
{
    size_t i = 0, start_offset = 0;
    int rc;
    out->n = 0;
    while (i < n) {
        size_t end = 0, start = i, stop;
        int32_t k = trie_longest(tr, s, n, i, &end);
        const added_token *tok;
        if (k < 0) {
            i++;
            continue;
        }
        tok = &t->added[k];
        stop = end;
        i = end; /* the matcher goes on after this match, whatever is kept */
        if (tok->single_word) {
            int cl;
            int start_space = start == 0 || !is_word_char(last_char(s, start));
            int stop_space = stop == n || !is_word_char(spruce__utf8_get(s, n, stop, &cl));
            if (!start_space || !stop_space)
                continue;
        }
        if (tok->lstrip) {
            size_t ns = start;
            while (ns > 0 && spruce__is_space(last_char(s, ns))) {
                size_t p = ns - 1;
                while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80)
                    p--;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (tok->rstrip) {
            int cl;
            while (stop < n && spruce__is_space(spruce__utf8_get(s, n, stop, &cl)))
                stop += (size_t)cl;
        }
        if (start_offset < start && (rc = spruce__span_push(out, start_offset, start, -1)))
            return rc;
        if ((rc = spruce__span_push(out, start, stop, k)))
            return rc;
        start_offset = stop;
        if (i < stop)
            i = stop;
    }
    if (start_offset < n)
        return spruce__span_push(out, start_offset, n, -1);
    return 0;
}

typedef struct {
    pcre2_match_data *md;
    sbuf norm;
    pieces pa, pb;
    spans inner;
    bpe_work *work;
} encode_work;

/* Normalize, split out the normalized added tokens, pre-tokenize and run
 * the model on one stretch of text between raw added tokens. */
static int encode_text(const spruce_tokenizer *t, encode_work *w, const char *s, size_t n,
                       int first, int cont, idvec *ids)
{
    size_t k, i;
    int rc;
    pieces *p = &w->pa, *q = &w->pb;
    if ((rc = cont ? spruce__normalize_cont(t->norm, w->md, s, n, &w->norm)
                   : spruce__normalize(t->norm, w->md, s, n, &w->norm)))
        return rc;
    if ((rc = find_added(t, &t->norm_trie, w->norm.s ? w->norm.s : "", w->norm.len, &w->inner)))
        return rc;
    for (k = 0; k < w->inner.n; k++) {
        span g = w->inner.v[k];
        if (g.tag >= 0) {
            if ((rc = spruce__idvec_push(ids, t->added[g.tag].id)))
                return rc;
            continue;
        }
        spruce__pieces_clear(p);
        if ((rc = spruce__pieces_add(p, w->norm.s + g.a, g.b - g.a, first && g.a == 0)) ||
            (rc = spruce__pretokenize(t->pre, w->md, &p, &q)))
            return rc;
        for (i = 0; i < p->n; i++)
            if ((rc = spruce__bpe_encode(t->model, &w->work, p->buf.s + p->off[i], p->len[i], ids)))
                return rc;
    }
    return 0;
}

static int is_alnum_ascii(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* The first cut at or after from inside the stretch s[a..b): a '\n' whose
 * previous byte (inside the stretch) is an ASCII letter or digit; b if none. */
static size_t next_cut(const char *s, size_t a, size_t from, size_t b)
{
    const char *q;
    while (from < b && (q = memchr(s + from, '\n', b - from))) {
        size_t p = (size_t)(q - s);
        if (p > a && is_alnum_ascii(s[p - 1]))
            return p;
        from = p + 1;
    }
    return b;
}

/* One stretch s[a..b) between raw added tokens: whole, or (chunk > 0 and the
 * tokenizer allows it) in parts of about chunk bytes cut where the ids cannot
 * change, so the working buffers stay the size of a part.  progress (when
 * set) hears the offset reached after each part, of total. */
static int encode_stretch(const spruce_tokenizer *t, encode_work *w, const char *s, size_t a,
                          size_t b, size_t chunk, spruce_tokenizer_progress progress, void *ctx,
                          size_t total, idvec *ids)
{
    size_t pos = a;
    int rc = 0;
    while (pos < b && !rc) {
        size_t end = t->cuttable && chunk && b - pos > chunk ? next_cut(s, a, pos + chunk, b) : b;
        rc = encode_text(t, w, s + pos, end - pos, pos == 0, pos > a, ids);
        pos = end;
        if (progress)
            progress(ctx, pos, total);
    }
    return rc;
}

static int push_template(const spruce_tokenizer *t, int post, idvec *ids)
{
    size_t k, j;
    int rc = 0;
    for (k = 0; k < t->ntpl && !post; k++)
        for (j = 0; j < t->tpl[k].npre && !rc; j++)
            rc = spruce__idvec_push(ids, t->tpl[k].pre[j]);
    for (k = t->ntpl; k-- > 0 && post;)
        for (j = 0; j < t->tpl[k].npost && !rc; j++)
            rc = spruce__idvec_push(ids, t->tpl[k].post[j]);
    return rc;
}

/* Encode valid UTF-8 text[0..len) into ids; chunk as encode_stretch. */
static int encode_valid(const spruce_tokenizer *t, const char *text, size_t len, int add_special,
                        size_t chunk, spruce_tokenizer_progress progress, void *ctx, idvec *ids)
{
    encode_work w;
    spans seg = {0};
    size_t k;
    int rc = 0;
    memset(&w, 0, sizeof w);
    if (!(w.md = pcre2_match_data_create(4, NULL)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    if ((add_special && (rc = push_template(t, 0, ids))) ||
        (rc = find_added(t, &t->raw_trie, text ? text : "", len, &seg)))
        goto done;
    for (k = 0; k < seg.n && !rc; k++) {
        if (seg.v[k].tag >= 0)
            rc = spruce__idvec_push(ids, t->added[seg.v[k].tag].id);
        else
            rc = encode_stretch(t, &w, text, seg.v[k].a, seg.v[k].b, chunk, progress, ctx, len,
                                ids);
    }
    if (!rc && add_special)
        rc = push_template(t, 1, ids);
done:
    pcre2_match_data_free(w.md);
    spruce__sbuf_free(&w.norm);
    spruce__pieces_free(&w.pa);
    spruce__pieces_free(&w.pb);
    free(w.inner.v);
    spruce__bpe_work_free(w.work);
    free(seg.v);
    return rc;
}

int spruce__tokenizer_encode_chunked(const spruce_tokenizer *t, const char *text, size_t len,
                                     int add_special, size_t chunk, uint32_t **out, size_t *nout)
{
    idvec ids = {0};
    size_t bad;
    int rc;
    if (!t || (!text && len) || !out || !nout)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokenizer_encode: NULL argument");
    *out = NULL;
    *nout = 0;
    if ((bad = spruce__utf8_check(text, len)) != len)
        return spruce__seterr(SPRUCE_EINVAL,
                              "text is not valid UTF-8: byte 0x%02x at offset %zu",
                              (unsigned char)text[bad], bad);
    if ((rc = encode_valid(t, text, len, add_special, chunk, NULL, NULL, &ids))) {
        free(ids.v);
        return rc;
    }
    *out = ids.v;
    *nout = ids.n;
    return 0;
}

int spruce_tokenizer_encode(const spruce_tokenizer *t, const char *text, size_t len,
                            int add_special, uint32_t **out, size_t *nout)
{
    return spruce__tokenizer_encode_chunked(t, text, len, add_special, 0, out, nout);
}

int spruce_tokenizer_streams(const spruce_tokenizer *t) { return t->cuttable; }

int spruce__map_file(const char *path, const char **data, size_t *len)
{
    struct stat st;
    void *p;
    int fd, rc;
    *data = NULL;
    *len = 0;
    if ((rc = spruce__open_regular(path, &fd))) /* a directory or FIFO refused before a read */
        return rc;
    if (fstat(fd, &st) != 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (st.st_size == 0) {
        close(fd);
        *data = "";
        return 0;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return spruce__seterr(spruce__errno_code(errno), "%s: cannot map: %s", path,
                              strerror(errno));
    madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
    *data = p;
    *len = (size_t)st.st_size;
    return 0;
}

void spruce__unmap_file(const char *data, size_t len)
{
    if (len)
        munmap((void *)data, len);
}

int spruce_tokenizer_encode_file(const spruce_tokenizer *t, const char *path, int add_special,
                                 spruce_tokenizer_progress progress, void *ctx, uint32_t **out,
                                 size_t *nout)
{
    const char *text;
    idvec ids = {0};
    size_t len, bad;
    int rc;
    if (!t || !path || !out || !nout)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokenizer_encode_file: NULL argument");
    *out = NULL;
    *nout = 0;
    if ((rc = spruce__map_file(path, &text, &len)))
        return rc;
    if ((bad = spruce__utf8_check(text, len)) != len)
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: not valid UTF-8 text: byte 0x%02x at offset %zu",
                            path, (unsigned char)text[bad], bad);
    else
        rc = encode_valid(t, text, len, add_special, SPRUCE_TOKENIZER_CHUNK, progress, ctx, &ids);
    spruce__unmap_file(text, len);
    if (rc) {
        free(ids.v);
        return rc;
    }
    *out = ids.v;
    *nout = ids.n;
    return 0;
}

int spruce_tokenizer_decode(const spruce_tokenizer *t, const uint32_t *ids, size_t n,
                            int skip_special, char **text, size_t *len)
{
    pieces a = {0}, b = {0}, *p = &a, *q = &b;
    pcre2_match_data *md = NULL;
    sbuf out = {0};
    size_t i;
    int rc = 0;
    if (!t || (!ids && n) || !text || !len)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokenizer_decode: NULL argument");
    *text = NULL;
    *len = 0;
    for (i = 0; i < n && !rc; i++) {
        size_t l;
        const char *s = token_of(t, ids[i], &l);
        if (!s)
            rc = spruce__seterr(SPRUCE_EINVAL, "id %u (position %zu) is not a token of %s", ids[i],
                                i, t->path);
        else if (!(skip_special && spruce_tokenizer_is_special(t, ids[i])))
            rc = spruce__pieces_add(p, s, l, 0);
    }
    if (!rc && !(md = pcre2_match_data_create(4, NULL)))
        rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    if (!rc)
        rc = spruce__decode(t->dec, md, &p, &q, &out);
    if (!rc && !out.s)
        rc = spruce__sbuf_put(&out, "", 0);
    pcre2_match_data_free(md);
    spruce__pieces_free(&a);
    spruce__pieces_free(&b);
    if (rc) {
        spruce__sbuf_free(&out);
        return rc;
    }
    *text = out.s;
    *len = out.len;
    return 0;
}

/* For the tests: the reference BPE on one word through the same model. */
int spruce__tokenizer_bpe_word(const spruce_tokenizer *t, const char *s, size_t n, int naive,
                               uint32_t **ids, size_t *nids);
int spruce__tokenizer_bpe_word(const spruce_tokenizer *t, const char *s, size_t n, int naive,
                               uint32_t **ids, size_t *nids)
{
    idvec v = {0};
    bpe_work *w = NULL;
    int rc = naive ? spruce__bpe_encode_naive(t->model, s, n, &v)
                   : spruce__bpe_encode(t->model, &w, s, n, &v);
    spruce__bpe_work_free(w);
    if (rc) {
        free(v.v);
        return rc;
    }
    *ids = v.v;
    *nids = v.n;
    return 0;
}
