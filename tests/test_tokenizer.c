/* test_tokenizer.c: the tokenizer.json tokenizer (src/text) against the ids
 * and decoded texts of the Hugging Face tokenizers library (the fixtures in
 * $SPRUCE_FIXTURES/tokenizers), its errors, its BPE merge against the
 * quadratic reference, and the `spruce tokenize` command. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spruce_tokenizer.h"
#include "spruce_tokens.h"
#include "tmpdir_testutil.h"

/* Internal to src/text: one BPE word through the model, fast or naive. */
int spruce__tokenizer_bpe_word(const spruce_tokenizer *t, const char *s, size_t n, int naive,
                               uint32_t **ids, size_t *nids);

static void setup(void) { tmpdir_make("tokenizer"); }
static void teardown(void) { tmpdir_remove(); }

TestSuite(tokenizer, .init = setup, .fini = teardown);

static const char *put(const char *name, const char *text)
{
    static char p[4200];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
    return p;
}

static int same_ids(const uint32_t *ids, size_t n, json_t *want)
{
    size_t k;
    if (n != json_array_size(want))
        return 0;
    for (k = 0; k < n; k++)
        if (ids[k] != (uint32_t)json_integer_value(json_array_get(want, k)))
            return 0;
    return 1;
}

/* Every case of tests/<set>-<name>.json: ids without and (hard sets) with
 * special tokens, and the decoded text of the library's ids. */
static void check_cases(const char *name, const char *set)
{
    char tdir[64], file[64];
    spruce_tokenizer *t;
    json_t *cases;
    json_error_t je;
    size_t i, checked = 0;
    snprintf(tdir, sizeof tdir, "%s", name);
    snprintf(file, sizeof file, "tests/%s-%s.json", set, name);
    NEED(tp, tdir);
    NEED(cp, file);
    cr_assert_eq(spruce_tokenizer_load(tp, &t), 0, "%s", spruce_errdetail());
    cases = json_load_file(cp, 0, &je);
    cr_assert_not_null(cases, "%s: %s", cp, je.text);
    cr_assert_gt(json_array_size(cases), 0);
    for (i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i), *text = json_object_get(c, "text"),
               *want = json_object_get(c, "ids"), *ws = json_object_get(c, "ids_with_special"),
               *dec = json_object_get(c, "decoded");
        uint32_t *ids;
        size_t n;
        cr_assert_eq(spruce_tokenizer_encode(t, json_string_value(text), json_string_length(text),
                                             0, &ids, &n),
                     0, "%s case %zu: %s", cp, i, spruce_errdetail());
        cr_expect(same_ids(ids, n, want), "%s case %zu: ids differ for '%s'", cp, i,
                  json_string_value(text));
        free(ids);
        if (ws) {
            cr_assert_eq(spruce_tokenizer_encode(t, json_string_value(text),
                                                 json_string_length(text), 1, &ids, &n),
                         0, "%s", spruce_errdetail());
            cr_expect(same_ids(ids, n, ws), "%s case %zu: ids with special tokens differ", cp, i);
            free(ids);
        }
        if (dec) {
            size_t k, m = json_array_size(want), dl;
            uint32_t *w = malloc((m + 1) * sizeof *w);
            char *d;
            cr_assert_not_null(w);
            for (k = 0; k < m; k++)
                w[k] = (uint32_t)json_integer_value(json_array_get(want, k));
            cr_assert_eq(spruce_tokenizer_decode(t, w, m, 0, &d, &dl), 0, "%s", spruce_errdetail());
            cr_expect(dl == json_string_length(dec) && !memcmp(d, json_string_value(dec), dl),
                      "%s case %zu: decoded '%s', the library '%s'", cp, i, d,
                      json_string_value(dec));
            free(d);
            free(w);
        }
        checked++;
    }
    cr_assert_eq(checked, json_array_size(cases));
    json_decref(cases);
    spruce_tokenizer_free(t);
}

Test(tokenizer, qwen3_llamacpp) { check_cases("qwen3", "llamacpp"); }
Test(tokenizer, qwen3_hard) { check_cases("qwen3", "hard"); }
Test(tokenizer, llama3_llamacpp) { check_cases("llama3", "llamacpp"); }
Test(tokenizer, llama3_hard) { check_cases("llama3", "hard"); }
Test(tokenizer, mistral_llamacpp) { check_cases("mistral", "llamacpp"); }
Test(tokenizer, mistral_hard) { check_cases("mistral", "hard"); }

Test(tokenizer, queries)
{
    spruce_tokenizer *t;
    NEED(mp, "mistral");
    cr_assert_eq(spruce_tokenizer_load(mp, &t), 0, "%s", spruce_errdetail());
    cr_expect_eq(spruce_tokenizer_vocab_size(t), 32000);
    cr_expect_eq(spruce_tokenizer_bos(t), 1);
    cr_expect_eq(spruce_tokenizer_eos(t), 2);
    cr_expect_eq(spruce_tokenizer_token_id(t, "<s>", 3), 1);
    cr_expect_eq(spruce_tokenizer_token_id(t, "no such token", 13), -1);
    cr_expect_str_eq(spruce_tokenizer_token(t, 1), "<s>");
    cr_expect(spruce_tokenizer_is_special(t, 2));
    cr_expect(!spruce_tokenizer_is_special(t, 100));
    cr_expect_null(spruce_tokenizer_token(t, 32000));
    spruce_tokenizer_free(t);
    spruce_tokenizer_free(NULL);
}

/* ---- malformed files ---- */

/* A tiny BPE: a, b, c and the merges that build ab, bc, abc, ... */
#define TINY_VOCAB                                                                        \
    "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \"aa\": 6, " \
    "\"aaa\": 7, \"cc\": 8, \"ca\": 9, \"abca\": 10, \" \": 11}"
#define TINY_MERGES "\"merges\": [\"a b\", [\"b\", \"c\"], \"ab c\", \"a a\", \"aa a\", \"c c\", \"c a\", \"abc a\"]"

static void expect_load_error(const char *name, const char *json, int code, const char *what)
{
    spruce_tokenizer *t = (spruce_tokenizer *)1;
    const char *p = put(name, json);
    int rc = spruce_tokenizer_load(p, &t);
    cr_expect_eq(rc, code, "%s: code %d, expected %d (%s)", name, rc, code, spruce_errdetail());
    cr_expect_null(t);
    cr_expect(strstr(spruce_errdetail(), what) != NULL, "%s: message '%s' does not say '%s'",
              name, spruce_errdetail(), what);
    cr_expect(strstr(spruce_errdetail(), name) != NULL, "%s: message '%s' does not name the file",
              name, spruce_errdetail());
}

Test(tokenizer, malformed_files)
{
    expect_load_error("nomodel.json", "{\"normalizer\": null}", SPRUCE_EFORMAT, "\"model\"");
    expect_load_error("trunc.json", "{\"model\": {\"type\": \"BPE\", ", SPRUCE_EFORMAT, "line");
    expect_load_error("unknown-merge.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": [\"a x\"]}}",
                      SPRUCE_EFORMAT, "token 'x' is not in the vocabulary");
    expect_load_error("unmerged.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": [\"b a\"]}}",
                      SPRUCE_EFORMAT, "merged token 'ba'");
    expect_load_error("badregex.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a|\"}, "
                      "\"behavior\": \"Isolated\", \"invert\": false}}",
                      SPRUCE_EFORMAT, "bad regex '(a|'");
    expect_load_error("bert.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}",
                      SPRUCE_EUNSUPPORTED, "pre_tokenizer type 'BertPreTokenizer' is not supported");
    expect_load_error("nmt.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"normalizer\": {\"type\": \"Nmt\"}}",
                      SPRUCE_EUNSUPPORTED, "normalizer type 'Nmt' is not supported");
    expect_load_error("wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", " TINY_VOCAB "}}",
                      SPRUCE_EUNSUPPORTED, "model type 'WordPiece' is not supported");
    expect_load_error("dropout.json",
                      "{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, " TINY_VOCAB ", " TINY_MERGES "}}",
                      SPRUCE_EUNSUPPORTED, "dropout");
    expect_load_error("prefix.json",
                      "{\"model\": {\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\", " TINY_VOCAB
                      ", " TINY_MERGES "}}",
                      SPRUCE_EUNSUPPORTED, "continuing_subword_prefix ##");
    expect_load_error("roberta.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"post_processor\": {\"type\": \"RobertaProcessing\"}}",
                      SPRUCE_EUNSUPPORTED, "post_processor type 'RobertaProcessing'");
    expect_load_error("wpdec.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"decoder\": {\"type\": \"WordPiece\"}}",
                      SPRUCE_EUNSUPPORTED, "decoder type 'WordPiece'");
    expect_load_error("trunc2.json",
                      "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}, "
                      "\"truncation\": {\"max_length\": 8}}",
                      SPRUCE_EUNSUPPORTED, "truncation");
    {
        spruce_tokenizer *t;
        char p[4200];
        snprintf(p, sizeof p, "%s/absent.json", dir);
        cr_expect_eq(spruce_tokenizer_load(p, &t), SPRUCE_ENOTFOUND);
    }
}

Test(tokenizer, invalid_utf8)
{
    static const struct {
        const char *s;
        size_t n, at;
    } bad[] = {
        {"ab\xff", 3, 2},          {"\x80", 1, 0},           {"x\xc3", 2, 1},
        {"\xe2\x82", 2, 0},        {"ok \xc0\xaf", 5, 3},    {"\xed\xa0\x80", 3, 0},
        {"\xf4\x90\x80\x80", 4, 0}, {"a\xf0\x9f\x98", 4, 1},
    };
    spruce_tokenizer *t;
    const char *p = put("tiny.json", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}}");
    size_t i;
    cr_assert_eq(spruce_tokenizer_load(p, &t), 0, "%s", spruce_errdetail());
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint32_t *ids = (uint32_t *)1;
        size_t n = 7;
        char want[64];
        cr_expect_eq(spruce_tokenizer_encode(t, bad[i].s, bad[i].n, 0, &ids, &n), SPRUCE_EINVAL,
                     "case %zu", i);
        cr_expect_null(ids);
        cr_expect_eq(n, 0);
        snprintf(want, sizeof want, "at offset %zu", bad[i].at);
        cr_expect(strstr(spruce_errdetail(), want) != NULL, "case %zu: '%s' does not say '%s'", i,
                  spruce_errdetail(), want);
    }
    spruce_tokenizer_free(t);
}

/* ---- the merge against the quadratic reference ---- */

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static void compare_merge(const spruce_tokenizer *t, const char *s, size_t n)
{
    uint32_t *a, *b;
    size_t na, nb;
    cr_assert_eq(spruce__tokenizer_bpe_word(t, s, n, 0, &a, &na), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce__tokenizer_bpe_word(t, s, n, 1, &b, &nb), 0, "%s", spruce_errdetail());
    cr_assert(na == nb && !memcmp(a, b, na * sizeof *a), "merge differs on '%.*s'", (int)n, s);
    free(a);
    free(b);
}

Test(tokenizer, merge_matches_reference_tiny)
{
    spruce_tokenizer *t;
    const char *p = put("tiny.json", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", " TINY_MERGES "}}");
    char w[200];
    int k;
    cr_assert_eq(spruce_tokenizer_load(p, &t), 0, "%s", spruce_errdetail());
    for (k = 0; k < 3000; k++) {
        size_t n = 1 + next_rand() % (sizeof w - 1), i;
        for (i = 0; i < n; i++)
            w[i] = "abc"[next_rand() % (k % 2 ? 3 : 2)];
        compare_merge(t, w, n);
    }
    spruce_tokenizer_free(t);
}

/* Random words of the characters of real text, on Mistral (SentencePiece
 * style: characters and byte fallback) and Qwen3 (byte-level characters). */
static void merge_real(const char *name)
{
    static const char *units[] = {"▁", "e", "t", "a", "o", "n", "s", "h", "r", "i", "l", "d",
                                  "th", "in", "Ġ", "é", "中", "文", "😀", "1", "0", ".", ","};
    spruce_tokenizer *t;
    char w[2048];
    int k;
    NEED(tp, name);
    cr_assert_eq(spruce_tokenizer_load(tp, &t), 0, "%s", spruce_errdetail());
    for (k = 0; k < 400; k++) {
        size_t n = 0, len = 1 + next_rand() % 300, i;
        for (i = 0; i < len; i++) {
            const char *u = units[next_rand() % (sizeof units / sizeof *units)];
            if (n + strlen(u) >= sizeof w)
                break;
            memcpy(w + n, u, strlen(u));
            n += strlen(u);
        }
        compare_merge(t, w, n);
    }
    spruce_tokenizer_free(t);
}

Test(tokenizer, merge_matches_reference_mistral) { merge_real("mistral"); }
Test(tokenizer, merge_matches_reference_qwen3) { merge_real("qwen3"); }

/* English-like text of n bytes: words from a list, spaces, sometimes a
 * newline; deterministic. */
static char *english(size_t n)
{
    static const char *words[] = {"the", "of", "and", "tokenizer", "merges", "pairs", "in",
                                  "a", "heap", "over", "linked", "list", "Mistral", "has", "no",
                                  "pre-tokenizer,", "so", "one", "word.", "1234", "don't"};
    char *s = malloc(n + 1);
    size_t k = 0;
    cr_assert_not_null(s);
    while (k < n) {
        const char *w = words[next_rand() % (sizeof words / sizeof *words)];
        size_t l = strlen(w);
        if (k + l + 1 > n)
            break;
        memcpy(s + k, w, l);
        k += l;
        s[k++] = next_rand() % 40 ? ' ' : '\n';
    }
    while (k < n)
        s[k++] = 'x';
    s[n] = 0;
    return s;
}

Test(tokenizer, mistral_one_megabyte_word)
{
    spruce_tokenizer *t;
    size_t n = 1 << 20, pn = 4096, i, k = 0, ni, nr, dl;
    char *text, *norm, *d;
    uint32_t *ids, *ref;
    NEED(tp, "mistral");
    cr_assert_eq(spruce_tokenizer_load(tp, &t), 0, "%s", spruce_errdetail());
    text = english(n);
    /* the whole megabyte is one BPE word: it encodes and decodes back */
    cr_assert_eq(spruce_tokenizer_encode(t, text, n, 0, &ids, &ni), 0, "%s", spruce_errdetail());
    cr_assert_gt(ni, n / 8);
    cr_assert_eq(spruce_tokenizer_decode(t, ids, ni, 0, &d, &dl), 0, "%s", spruce_errdetail());
    cr_expect(dl == n && !memcmp(d, text, n), "1 MB: decode(encode(text)) is not the text");
    free(d);
    free(ids);
    /* a prefix against the quadratic merge of its normalized form
     * (Prepend "▁", Replace " " -> "▁", as Mistral's tokenizer.json says) */
    norm = malloc(3 * pn + 4);
    cr_assert_not_null(norm);
    memcpy(norm, "\xe2\x96\x81", 3);
    k = 3;
    for (i = 0; i < pn; i++) {
        if (text[i] == ' ') {
            memcpy(norm + k, "\xe2\x96\x81", 3);
            k += 3;
        } else
            norm[k++] = text[i];
    }
    cr_assert_eq(spruce_tokenizer_encode(t, text, pn, 0, &ids, &ni), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce__tokenizer_bpe_word(t, norm, k, 1, &ref, &nr), 0, "%s", spruce_errdetail());
    cr_expect(ni == nr && !memcmp(ids, ref, ni * sizeof *ids), "4 KB prefix: %zu ids, reference %zu",
              ni, nr);
    free(ids);
    free(ref);
    free(norm);
    free(text);
    spruce_tokenizer_free(t);
}

/* ---- the command ---- */

/* Run `spruce tokenize ARGS`, its standard output into out; the exit status. */
static int run(const char *args, char *out, size_t cap)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[8192];
    FILE *f;
    size_t n;
    int st;
    snprintf(cmd, sizeof cmd, "'%s' tokenize %s 2>'%s/stderr'", bin, args, dir);
    f = popen(cmd, "r");
    cr_assert_not_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *stderr_text(void)
{
    static char buf[4096];
    char p[4200];
    FILE *f;
    size_t n;
    snprintf(p, sizeof p, "%s/stderr", dir);
    f = fopen(p, "rb");
    cr_assert_not_null(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

#define NEED_BIN()                                                                      \
    if (!getenv("SPRUCE_BIN") || access(getenv("SPRUCE_BIN"), X_OK) != 0) {             \
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')"); \
        return;                                                                         \
    }

Test(tokenizer, cli)
{
    char out[65536], args[8192];
    uint32_t *ids;
    size_t n;
    json_t *j;
    NEED_BIN();
    NEED(mp, "mistral");
    snprintf(args, sizeof args, "'%s' --text 'Hello world'", mp);
    cr_assert_eq(run(args, out, sizeof out), 0, "%s", stderr_text());
    cr_expect_str_eq(out, "22557 1526\n");
    snprintf(args, sizeof args, "'%s' --text 'Hello world' --add-special --json", mp);
    cr_assert_eq(run(args, out, sizeof out), 0, "%s", stderr_text());
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", out);
    cr_expect_eq(json_array_size(json_object_get(j, "ids")), 3);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(j, "ids"), 0)), 1);
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "tokens"), 1)),
                     "\xe2\x96\x81Hello");
    json_decref(j);
    /* --decode from --text and from a file, plain and --json */
    snprintf(args, sizeof args, "'%s' --decode --text '1 22557 1526'", mp);
    cr_assert_eq(run(args, out, sizeof out), 0, "%s", stderr_text());
    cr_expect_str_eq(out, "<s> Hello world\n");
    snprintf(args, sizeof args, "'%s' --decode --skip-special --json '%s'", mp,
             put("ids.txt", "1 22557\n1526\n"));
    cr_assert_eq(run(args, out, sizeof out), 0, "%s", stderr_text());
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", out);
    cr_expect_str_eq(json_string_value(json_object_get(j, "text")), "Hello world");
    json_decref(j);
    /* --out: a .u32 token file with the same ids */
    snprintf(args, sizeof args, "'%s' '%s' --out '%s/t.u32'", mp, put("in.txt", "Hello world"), dir);
    cr_assert_eq(run(args, out, sizeof out), 0, "%s", stderr_text());
    snprintf(args, sizeof args, "%s/t.u32", dir);
    cr_assert_eq(spruce_tokens_load(args, &ids, &n), 0, "%s", spruce_errdetail());
    cr_expect(n == 2 && ids[0] == 22557 && ids[1] == 1526);
    free(ids);
    /* errors: invalid UTF-8 (1), an unknown id (1), a missing tokenizer (1), usage (2) */
    snprintf(args, sizeof args, "'%s' '%s'", mp, put("bad.txt", "ab\xff"));
    cr_expect_eq(run(args, out, sizeof out), 1);
    cr_expect(strstr(stderr_text(), "offset 2") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "'%s' --decode --text '5 99999'", mp);
    cr_expect_eq(run(args, out, sizeof out), 1);
    cr_expect(strstr(stderr_text(), "99999") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "'%s' --decode --text '5 x7'", mp);
    cr_expect_eq(run(args, out, sizeof out), 1);
    cr_expect(strstr(stderr_text(), "x7") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "'%s/none' --text a", dir);
    cr_expect_eq(run(args, out, sizeof out), 1);
    cr_expect(strstr(stderr_text(), "none/tokenizer.json") != NULL ||
                  strstr(stderr_text(), "none") != NULL,
              "%s", stderr_text());
    snprintf(args, sizeof args, "'%s' --text a '%s'", mp, put("x.txt", "a"));
    cr_expect_eq(run(args, out, sizeof out), 2);
    cr_expect_eq(run("", out, sizeof out), 2);
    cr_expect_eq(run("--help", out, sizeof out), 0);
    cr_expect(strstr(out, "--add-special") != NULL);
}

/* ---- the components the fixture tokenizers do not use ----
 * tests/data/tokenizer/variants.json (made by make-cases.js with the library):
 * Mistral's tokenizer.json with its normalizer, pre-tokenizer, decoder or
 * added tokens replaced, and the library's ids and decoded text. */
Test(tokenizer, component_variants)
{
    const char *src = getenv("SPRUCE_SRCDIR");
    char vpath[4200];
    json_t *variants, *base;
    json_error_t je;
    size_t v, nvar;
    NEED(mp, "mistral/tokenizer.json");
    snprintf(vpath, sizeof vpath, "%s/tests/data/tokenizer/variants.json", src ? src : ".");
    variants = json_load_file(vpath, 0, &je);
    cr_assert_not_null(variants, "%s: %s", vpath, je.text);
    nvar = json_array_size(variants);
    cr_assert_gt(nvar, 10);
    for (v = 0; v < nvar; v++) {
        json_t *var = json_array_get(variants, v), *rep = json_object_get(var, "replace"),
               *cases = json_object_get(var, "cases"), *val;
        const char *name = json_string_value(json_object_get(var, "name")), *key;
        char tpath[4200];
        spruce_tokenizer *t;
        size_t i;
        base = json_load_file(mp, 0, &je);
        cr_assert_not_null(base, "%s: %s", mp, je.text);
        json_object_foreach(rep, key, val) {
            if (!strcmp(key, "added_tokens_extra"))
                json_array_extend(json_object_get(base, "added_tokens"), val);
            else
                json_object_set(base, key, val);
        }
        snprintf(tpath, sizeof tpath, "%s/%s.json", dir, name);
        cr_assert_eq(json_dump_file(base, tpath, 0), 0);
        json_decref(base);
        cr_assert_eq(spruce_tokenizer_load(tpath, &t), 0, "%s: %s", name, spruce_errdetail());
        for (i = 0; i < json_array_size(cases); i++) {
            json_t *c = json_array_get(cases, i), *text = json_object_get(c, "text"),
                   *want = json_object_get(c, "ids"), *dec = json_object_get(c, "decoded");
            uint32_t *ids;
            size_t n, dl;
            char *d;
            cr_assert_eq(spruce_tokenizer_encode(t, json_string_value(text),
                                                 json_string_length(text), 0, &ids, &n),
                         0, "%s: %s", name, spruce_errdetail());
            cr_expect(same_ids(ids, n, want), "%s case %zu: ids differ for '%s'", name, i,
                      json_string_value(text));
            free(ids);
            {
                size_t k, m = json_array_size(want);
                uint32_t *w = malloc((m + 1) * sizeof *w);
                cr_assert_not_null(w);
                for (k = 0; k < m; k++)
                    w[k] = (uint32_t)json_integer_value(json_array_get(want, k));
                cr_assert_eq(spruce_tokenizer_decode(t, w, m, 0, &d, &dl), 0, "%s: %s", name,
                             spruce_errdetail());
                free(w);
            }
            cr_expect(dl == json_string_length(dec) && !memcmp(d, json_string_value(dec), dl),
                      "%s case %zu: decoded '%s', the library '%s'", name, i, d,
                      json_string_value(dec));
            free(d);
        }
        spruce_tokenizer_free(t);
    }
    json_decref(variants);
}
