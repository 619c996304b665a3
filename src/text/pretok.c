/* pretok.c: the pre-tokenizers of tokenizers/src/pre_tokenizers/: Sequence,
 * Split (split.rs; the behaviours of SplitDelimiterBehavior in
 * tokenizer/normalizer.rs), ByteLevel (byte_level.rs), Metaspace
 * (metaspace.rs), Digits, Punctuation, Whitespace, WhitespaceSplit.  Each
 * splits every piece it is given; empty pieces are dropped, as
 * PreTokenizedString::split does. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "spruce_error.h"
#include "text_internal.h"

enum { P_SEQ, P_SPLIT, P_BYTELEVEL, P_METASPACE, P_DIGITS, P_PUNCT, P_WS, P_WSSPLIT };
enum { B_REMOVED, B_ISOLATED, B_PREV, B_NEXT, B_CONTIG };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };

/* The GPT-2 pattern of ByteLevel's use_regex (byte_level.rs). */
static const char gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Whitespace's \w+|[^\w\s]+ with Rust's \w (Alphabetic, marks, Nd, Pc, joiners). */
static const char ws_re[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]+|"
                            "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}\\s]+";

struct pretok {
    int type;
    pretok **seq;
    size_t nseq;
    pattern pat;
    int behavior, invert;
    int add_prefix_space, use_regex;
    char rep[4]; /* Metaspace's replacement */
    int rep_len;
    uint32_t rep_cp;
    int scheme, split;
    int individual;
    int cut_safe; /* Split: the pattern is one of known_cut_safe[] */
};

/* Split patterns that never join an ASCII letter or digit to a '\n' after it
 * (no alternative can hold both, none looks behind): Llama 3's and Qwen2's
 * (Qwen3 ships Qwen2's).  A match can then never span a cut made there. */
static const char *const known_cut_safe[] = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

static int is_cut_safe_pattern(json_t *pat)
{
    const char *re = json_string_value(json_object_get(pat, "Regex"));
    size_t i;
    for (i = 0; re && i < sizeof known_cut_safe / sizeof *known_cut_safe; i++)
        if (!strcmp(re, known_cut_safe[i]))
            return 1;
    return 0;
}

/* 1: a cut before a '\n' that follows an ASCII letter or digit is a boundary of
 * every split and no stage looks across it; 0: unknown.  Needs one stage that
 * surely splits there (a known Split pattern, ByteLevel's GPT-2 regex) and no
 * stage that acts on the start of the whole stretch (add_prefix_space) or
 * merges pieces; the GPT-2 regex, like the known ones, never joins a letter
 * or digit to a newline. */
static int cut_stage(const pretok *pt, int *splits)
{
    size_t i;
    switch (pt->type) {
    case P_SEQ:
        for (i = 0; i < pt->nseq; i++)
            if (!cut_stage(pt->seq[i], splits))
                return 0;
        return 1;
    case P_SPLIT:
        if (!pt->cut_safe || pt->invert || (pt->behavior != B_ISOLATED && pt->behavior != B_REMOVED))
            return 0;
        *splits = 1;
        return 1;
    case P_BYTELEVEL:
        if (pt->add_prefix_space)
            return 0;
        *splits |= pt->use_regex;
        return 1;
    default: return 0;
    }
}

int spruce__pretok_cuttable(const pretok *pt)
{
    int splits = 0;
    return pt && cut_stage(pt, &splits) && splits;
}

void spruce__pretok_free(pretok *pt)
{
    size_t i;
    if (!pt)
        return;
    for (i = 0; i < pt->nseq; i++)
        spruce__pretok_free(pt->seq[i]);
    free(pt->seq);
    spruce__pattern_free(&pt->pat);
    free(pt);
}

static int behavior(json_t *v, int dflt, const char *path, int *out)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    const char *s = json_string_value(v);
    int i;
    if (!v) {
        *out = dflt;
        return 0;
    }
    for (i = 0; s && i < 5; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return 0;
        }
    return spruce__seterr(SPRUCE_EUNSUPPORTED,
                          "%s: pre_tokenizer behavior '%s' is not supported (supported: Removed, "
                          "Isolated, MergedWithPrevious, MergedWithNext, Contiguous)",
                          path, s ? s : "(not a string)");
}

static int get_bool(json_t *j, const char *key, int dflt)
{
    json_t *v = json_object_get(j, key);
    return v && json_is_boolean(v) ? json_is_true(v) : dflt;
}

int spruce__pretok_parse(pretok **out, json_t *j, const char *path)
{
    static const char *names[] = {"Sequence", "Split",       "ByteLevel",  "Metaspace",
                                  "Digits",   "Punctuation", "Whitespace", "WhitespaceSplit"};
    const char *type = json_string_value(json_object_get(j, "type"));
    pretok *pt;
    size_t i;
    int rc = 0;
    *out = NULL;
    if (!type)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: pre_tokenizer: no \"type\"", path);
    for (i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(type, names[i]))
            break;
    if (i == sizeof names / sizeof *names)
        return spruce__seterr(SPRUCE_EUNSUPPORTED,
                              "%s: pre_tokenizer type '%s' is not supported (supported: Sequence, "
                              "Split, ByteLevel, Metaspace, Digits, Punctuation, Whitespace, "
                              "WhitespaceSplit)",
                              path, type);
    if (!(pt = calloc(1, sizeof *pt)))
        return spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
    pt->type = (int)i;
    switch (pt->type) {
    case P_SEQ: {
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: pre_tokenizer Sequence: no \"pretokenizers\" array", path);
            break;
        }
        if (!(pt->seq = calloc(json_array_size(a) + 1, sizeof *pt->seq))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "tokenizer: out of memory");
            break;
        }
        for (i = 0; i < json_array_size(a) && !rc; i++)
            if (!(rc = spruce__pretok_parse(&pt->seq[i], json_array_get(a, i), path)))
                pt->nseq++;
        break;
    }
    case P_SPLIT:
        if (!(rc = spruce__pattern_parse(&pt->pat, json_object_get(j, "pattern"), path,
                                         "pre_tokenizer Split.pattern")) &&
            !(rc = behavior(json_object_get(j, "behavior"), B_ISOLATED, path, &pt->behavior))) {
            pt->invert = get_bool(j, "invert", 0);
            pt->cut_safe = is_cut_safe_pattern(json_object_get(j, "pattern"));
        }
        break;
    case P_BYTELEVEL:
        pt->add_prefix_space = get_bool(j, "add_prefix_space", 1);
        pt->use_regex = get_bool(j, "use_regex", 1);
        if (pt->use_regex) {
            pt->pat.is_regex = 1;
            rc = spruce__regex_compile(&pt->pat.re, gpt2_re, sizeof gpt2_re - 1, path,
                                       "pre_tokenizer ByteLevel");
        }
        break;
    case P_METASPACE: {
        json_t *r = json_object_get(j, "replacement"), *s = json_object_get(j, "prepend_scheme");
        int cl;
        if (!json_is_string(r) || !json_string_length(r) ||
            spruce__utf8_check(json_string_value(r), json_string_length(r)) !=
                json_string_length(r) ||
            (spruce__utf8_get(json_string_value(r), json_string_length(r), 0, &cl), (size_t)cl) !=
                json_string_length(r)) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: pre_tokenizer Metaspace.replacement: expected one character",
                                path);
            break;
        }
        pt->rep_len = (int)json_string_length(r);
        memcpy(pt->rep, json_string_value(r), (size_t)pt->rep_len);
        pt->rep_cp = spruce__utf8_get(pt->rep, (size_t)pt->rep_len, 0, &cl);
        if (s) {
            const char *v = json_string_value(s);
            if (v && !strcmp(v, "always"))
                pt->scheme = PS_ALWAYS;
            else if (v && !strcmp(v, "first"))
                pt->scheme = PS_FIRST;
            else if (v && !strcmp(v, "never"))
                pt->scheme = PS_NEVER;
            else
                rc = spruce__seterr(SPRUCE_EUNSUPPORTED,
                                    "%s: pre_tokenizer Metaspace.prepend_scheme '%s' is not "
                                    "supported (supported: always, first, never)",
                                    path, v ? v : "(not a string)");
        } else /* the older files' add_prefix_space */
            pt->scheme = get_bool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
        pt->split = get_bool(j, "split", 1);
        break;
    }
    case P_DIGITS:
        pt->individual = get_bool(j, "individual_digits", 0);
        break;
    case P_PUNCT:
        rc = behavior(json_object_get(j, "behavior"), B_ISOLATED, path, &pt->behavior);
        break;
    case P_WS:
        pt->pat.is_regex = 1;
        rc = spruce__regex_compile(&pt->pat.re, ws_re, sizeof ws_re - 1, path,
                                   "pre_tokenizer Whitespace");
        break;
    default:
        break;
    }
    if (rc) {
        spruce__pretok_free(pt);
        return rc;
    }
    *out = pt;
    return 0;
}

/* ---- splitting one piece ---- */

/* Pattern::find_matches for a pattern (pattern.rs): the matches and the gaps
 * between them, in order, covering s. */
static int find_pattern(const pattern *p, pcre2_match_data *md, const char *s, size_t n,
                        spans *out)
{
    size_t prev = 0, at = 0, ms, me;
    int rc;
    out->n = 0;
    while ((rc = spruce__pattern_next(p, md, s, n, at, &ms, &me)) == 1) {
        if (prev != ms && (rc = spruce__span_push(out, prev, ms, 0)))
            return rc;
        if ((rc = spruce__span_push(out, ms, me, 1)))
            return rc;
        prev = me;
        if (me == ms) { /* step over an empty match */
            int cl;
            if (me >= n)
                break;
            spruce__utf8_get(s, n, me, &cl);
            at = me + (size_t)cl;
        } else
            at = me;
    }
    if (rc < 0)
        return rc;
    if (prev != n)
        return spruce__span_push(out, prev, n, 0);
    return 0;
}

/* The same for a predicate on characters: each matching character is a match. */
static int find_chars(int (*pred)(uint32_t), const char *s, size_t n, spans *out)
{
    size_t i = 0, last = 0;
    int rc;
    out->n = 0;
    while (i < n) {
        int cl;
        uint32_t c = spruce__utf8_get(s, n, i, &cl);
        if (pred(c)) {
            if (last < i && (rc = spruce__span_push(out, last, i, 0)))
                return rc;
            if ((rc = spruce__span_push(out, i, i + (size_t)cl, 1)))
                return rc;
            last = i + (size_t)cl;
        }
        i += (size_t)cl;
    }
    if (last < n)
        return spruce__span_push(out, last, n, 0);
    return 0;
}

/* The splits of SplitDelimiterBehavior (NormalizedString::split), in place;
 * the m flag then means "remove". */
static void apply_behavior(spans *s, int beh, int invert)
{
    size_t i, k = 0;
    int prev = -1;
    if (invert)
        for (i = 0; i < s->n; i++)
            s->v[i].tag = !s->v[i].tag;
    switch (beh) {
    case B_ISOLATED:
        for (i = 0; i < s->n; i++)
            s->v[i].tag = 0;
        break;
    case B_REMOVED:
        break;
    case B_CONTIG:
        for (i = 0; i < s->n; i++) {
            int is_match = s->v[i].tag;
            if (k && prev == is_match)
                s->v[k - 1].b = s->v[i].b;
            else {
                s->v[k] = s->v[i];
                s->v[k++].tag = 0;
            }
            prev = is_match;
        }
        s->n = k;
        break;
    case B_PREV:
        prev = 0;
        for (i = 0; i < s->n; i++) {
            int is_match = s->v[i].tag;
            if (is_match && !prev && k)
                s->v[k - 1].b = s->v[i].b;
            else {
                s->v[k] = s->v[i];
                s->v[k++].tag = 0;
            }
            prev = is_match;
        }
        s->n = k;
        break;
    case B_NEXT: { /* the same from the right */
        size_t j = s->n;
        prev = 0;
        k = s->n;
        while (j-- > 0) {
            int is_match = s->v[j].tag;
            if (is_match && !prev && k < s->n)
                s->v[k].a = s->v[j].a;
            else {
                s->v[--k] = s->v[j];
                s->v[k].tag = 0;
            }
            prev = is_match;
        }
        memmove(s->v, s->v + k, (s->n - k) * sizeof *s->v);
        s->n -= k;
        break;
    }
    }
}

static int emit(pieces *out, const char *s, const spans *sp, int first)
{
    size_t i;
    int rc;
    for (i = 0; i < sp->n; i++)
        if (!sp->v[i].tag &&
            (rc = spruce__pieces_add(out, s + sp->v[i].a, sp->v[i].b - sp->v[i].a,
                                     first && sp->v[i].a == 0)))
            return rc;
    return 0;
}

static int is_punct(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (c < 128 && ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
                        (c >= 123 && c <= 126))) ||
           (k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO);
}

static int is_numeric(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* ByteLevel's mapping of every byte to its character. */
static int bytelevel_map(pieces *out, const char *s, size_t n, int first, int prefix)
{
    size_t i;
    int rc;
    char u[2];
    if ((rc = spruce__pieces_begin(out, first)))
        return rc;
    if (prefix && (rc = spruce__sbuf_put(&out->buf, "\xc4\xa0", 2))) /* ' ' is U+0120 */
        return rc;
    for (i = 0; i < n; i++) {
        int l = spruce__bytelevel_char((unsigned char)s[i], u);
        if ((rc = spruce__sbuf_put(&out->buf, u, (size_t)l)))
            return rc;
    }
    spruce__pieces_end(out);
    return 0;
}

static int metaspace(const pretok *pt, pieces *out, const char *s, size_t n, int first,
                     spans *sp)
{
    sbuf t = {0};
    size_t i;
    int rc = 0, pre;
    for (i = 0; i < n && !rc; i++)
        rc = s[i] == ' ' ? spruce__sbuf_put(&t, pt->rep, (size_t)pt->rep_len)
                         : spruce__sbuf_put(&t, s + i, 1);
    if (rc)
        goto done;
    pre = !(t.len >= (size_t)pt->rep_len && memcmp(t.s, pt->rep, (size_t)pt->rep_len) == 0) &&
          (pt->scheme == PS_ALWAYS || (pt->scheme == PS_FIRST && first));
    if (pre) {
        sbuf u = {0};
        if ((rc = spruce__sbuf_put(&u, pt->rep, (size_t)pt->rep_len)) ||
            (rc = spruce__sbuf_put(&u, t.s, t.len))) {
            spruce__sbuf_free(&u);
            goto done;
        }
        spruce__sbuf_free(&t);
        t = u;
    }
    if (!pt->split) {
        rc = spruce__pieces_add(out, t.s, t.len, first);
        goto done;
    }
    { /* split on the replacement, MergedWithNext */
        pattern lit = {0};
        lit.lit = (char *)pt->rep;
        lit.lit_len = (size_t)pt->rep_len;
        if ((rc = find_pattern(&lit, NULL, t.s, t.len, sp)))
            goto done;
        apply_behavior(sp, B_NEXT, 0);
        rc = emit(out, t.s, sp, first);
    }
done:
    spruce__sbuf_free(&t);
    return rc;
}

static int one(const pretok *pt, pcre2_match_data *md, const pieces *in, pieces *out)
{
    spans sp = {0};
    size_t i;
    int rc = 0;
    spruce__pieces_clear(out);
    for (i = 0; i < in->n && !rc; i++) {
        const char *s = in->buf.s + in->off[i];
        size_t n = in->len[i];
        int first = in->first[i];
        switch (pt->type) {
        case P_SPLIT:
            if (!(rc = find_pattern(&pt->pat, md, s, n, &sp))) {
                apply_behavior(&sp, pt->behavior, pt->invert);
                rc = emit(out, s, &sp, first);
            }
            break;
        case P_WS:
            if (!(rc = find_pattern(&pt->pat, md, s, n, &sp))) {
                apply_behavior(&sp, B_REMOVED, 1);
                rc = emit(out, s, &sp, first);
            }
            break;
        case P_WSSPLIT:
            if (!(rc = find_chars(spruce__is_space, s, n, &sp))) {
                apply_behavior(&sp, B_REMOVED, 0);
                rc = emit(out, s, &sp, first);
            }
            break;
        case P_PUNCT:
            if (!(rc = find_chars(is_punct, s, n, &sp))) {
                apply_behavior(&sp, pt->behavior, 0);
                rc = emit(out, s, &sp, first);
            }
            break;
        case P_DIGITS:
            if (!(rc = find_chars(is_numeric, s, n, &sp))) {
                apply_behavior(&sp, pt->individual ? B_ISOLATED : B_CONTIG, 0);
                rc = emit(out, s, &sp, first);
            }
            break;
        case P_METASPACE:
            rc = metaspace(pt, out, s, n, first, &sp);
            break;
        case P_BYTELEVEL: {
            int prefix = pt->add_prefix_space && s[0] != ' ';
            size_t k;
            if (!pt->use_regex) {
                rc = bytelevel_map(out, s, n, first, prefix);
                break;
            }
            if (prefix) { /* the regex runs on the piece with its space */
                sbuf t = {0};
                if (!(rc = spruce__sbuf_put(&t, " ", 1)) && !(rc = spruce__sbuf_put(&t, s, n)) &&
                    !(rc = find_pattern(&pt->pat, md, t.s, t.len, &sp))) {
                    apply_behavior(&sp, B_ISOLATED, 0);
                    for (k = 0; k < sp.n && !rc; k++)
                        rc = bytelevel_map(out, t.s + sp.v[k].a, sp.v[k].b - sp.v[k].a,
                                           first && k == 0, 0);
                }
                spruce__sbuf_free(&t);
                break;
            }
            if (!(rc = find_pattern(&pt->pat, md, s, n, &sp))) {
                apply_behavior(&sp, B_ISOLATED, 0);
                for (k = 0; k < sp.n && !rc; k++)
                    rc = bytelevel_map(out, s + sp.v[k].a, sp.v[k].b - sp.v[k].a,
                                       first && sp.v[k].a == 0, 0);
            }
            break;
        }
        default:
            break;
        }
    }
    free(sp.v);
    return rc;
}

int spruce__pretokenize(const pretok *pt, pcre2_match_data *md, pieces **p, pieces **tmp)
{
    size_t i;
    int rc;
    if (!pt)
        return 0;
    if (pt->type == P_SEQ) {
        for (i = 0; i < pt->nseq; i++)
            if ((rc = spruce__pretokenize(pt->seq[i], md, p, tmp)))
                return rc;
        return 0;
    }
    if ((rc = one(pt, md, *p, *tmp)))
        return rc;
    {
        pieces *t = *p;
        *p = *tmp;
        *tmp = t;
    }
    return 0;
}
