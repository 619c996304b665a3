/* test_text_data.c: calibration and evaluation data from text (src/text/data.c)
 * and streaming encoding: format detection and its overrides, windows drawn
 * reproducibly, short documents skipped, invalid UTF-8 named by offset, the
 * chunked encoding equal to the whole-text encoding on the fixture strings of
 * all three tokenizers, and eval / run on text equal to eval / run on the ids
 * of `spruce tokenize`. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spruce_textdata.h"
#include "spruce_tokenizer.h"
#include "tmpdir_testutil.h"

int spruce__tokenizer_encode_chunked(const spruce_tokenizer *t, const char *text, size_t len,
                                     int add_special, size_t chunk, uint32_t **ids, size_t *n);

static void setup(void) { tmpdir_make("textdata"); }
static void teardown(void) { tmpdir_remove(); }

TestSuite(textdata, .init = setup, .fini = teardown);

static const char *put(const char *name, const char *text, size_t n)
{
    static char p[2][4200];
    static int k;
    FILE *f;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    f = fopen(p[k], "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);
    return p[k];
}

/* The fixture's 300 hard strings, joined with newlines (malloc'ed). */
static char *joined(const char *name, size_t *len)
{
    char p[1100];
    json_t *a;
    size_t i;
    char *s = NULL;
    FILE *m;
    snprintf(p, sizeof p, "%s", tokenizer_fixture(name));
    a = json_load_file(p, 0, NULL);
    cr_assert_not_null(a, "%s", p);
    m = open_memstream(&s, len);
    for (i = 0; i < json_array_size(a); i++) {
        json_t *t = json_object_get(json_array_get(a, i), "text");
        fwrite(json_string_value(t), 1, json_string_length(t), m);
        fputs(i % 3 ? "\n" : "abc\n", m); /* plenty of places to cut */
    }
    fclose(m);
    json_decref(a);
    return s;
}

static void chunked_equals_whole(const char *tokdir, const char *cases, int must_stream)
{
    spruce_tokenizer *t = NULL;
    size_t len, n0, n1, chunk;
    uint32_t *a, *b;
    char *s;
    cr_assert_eq(spruce_tokenizer_load(tokdir, &t), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_tokenizer_streams(t), must_stream);
    s = joined(cases, &len);
    cr_assert_eq(spruce_tokenizer_encode(t, s, len, 1, &a, &n0), 0, "%s", spruce_errdetail());
    for (chunk = 1; chunk <= 4096; chunk *= 8) {
        cr_assert_eq(spruce__tokenizer_encode_chunked(t, s, len, 1, chunk, &b, &n1), 0);
        cr_assert_eq(n1, n0, "chunk %zu: %zu ids, whole %zu", chunk, n1, n0);
        cr_assert_eq(memcmp(a, b, n0 * sizeof *a), 0, "chunk %zu: ids differ", chunk);
        free(b);
    }
    { /* and through the file path */
        const char *f = put("all.txt", s, len);
        cr_assert_eq(spruce_tokenizer_encode_file(t, f, 1, NULL, NULL, &b, &n1), 0);
        cr_assert_eq(n1, n0);
        cr_assert_eq(memcmp(a, b, n0 * sizeof *a), 0);
        free(b);
    }
    free(a);
    free(s);
    spruce_tokenizer_free(t);
}

Test(textdata, chunked_llama3) { NEED(d, "llama3"); chunked_equals_whole(d, "tests/hard-llama3.json", 1); }
Test(textdata, chunked_qwen3) { NEED(d, "qwen3"); chunked_equals_whole(d, "tests/hard-qwen3.json", 1); }
Test(textdata, chunked_mistral) { NEED(d, "mistral"); chunked_equals_whole(d, "tests/hard-mistral.json", 1); }

Test(textdata, detect_and_override)
{
    spruce_data_format f;
    cr_assert_eq(spruce_data_detect(put("a.u16", "\1\0", 2), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_U16);
    cr_assert_eq(spruce_data_detect(put("a.u32", "\1\0\0\0", 4), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_U32);
    cr_assert_eq(spruce_data_detect(put("a.jsonl", "{\"text\": \"1 2\"}\n", 16), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_JSONL);
    cr_assert_eq(spruce_data_detect(put("a.txt", "1 2\n3\t4\n", 8), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_IDS);
    cr_assert_eq(spruce_data_detect(put("a.dat", "12 7", 4), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_IDS, "any name: digits are ids");
    cr_assert_eq(spruce_data_detect(put("b.txt", "1 2 -3", 6), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_TEXT, "a minus sign makes it text");
    cr_assert_eq(spruce_data_detect(put("c.txt", "Once upon", 9), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_TEXT);
    cr_assert_eq(spruce_data_detect(put("d.txt", " \n", 2), &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_TEXT, "no digit at all: not ids");
    cr_assert_neq(spruce_data_detect(put("e.txt", "", 0), &f), 0);
    cr_assert(strstr(spruce_errdetail(), "e.txt"));
    cr_assert_eq(spruce_data_format_parse("jsonl", &f), 0);
    cr_assert_eq(f, SPRUCE_DATA_JSONL);
    cr_assert_neq(spruce_data_format_parse("csv", &f), 0);
    { /* an override reads digits as text */
        uint32_t *ids;
        size_t n;
        const char *p = put("n.txt", "12 7", 4);
        cr_assert_eq(spruce_data_read_ids(p, SPRUCE_DATA_IDS, NULL, 0, NULL, NULL, &ids, &n), 0);
        cr_assert_eq(n, 2);
        cr_assert_eq(ids[0], 12);
        free(ids);
        cr_assert_neq(spruce_data_read_ids(p, SPRUCE_DATA_TEXT, NULL, 0, NULL, NULL, &ids, &n), 0);
        cr_assert(strstr(spruce_errdetail(), "tokenizer"), "%s", spruce_errdetail());
    }
}

Test(textdata, invalid_utf8_names_offset)
{
    NEED(d, "mistral");
    spruce_tokenizer *t;
    uint32_t *ids;
    size_t n;
    const char *p = put("bad.txt", "Hello \xff world", 13);
    cr_assert_eq(spruce_tokenizer_load(d, &t), 0);
    cr_assert_neq(spruce_data_read_ids(p, SPRUCE_DATA_TEXT, t, 1, NULL, NULL, &ids, &n), 0);
    cr_assert(strstr(spruce_errdetail(), "bad.txt") && strstr(spruce_errdetail(), "offset 6"),
              "%s", spruce_errdetail());
    spruce_tokenizer_free(t);
}

static void draw(const char *p, spruce_data_format f, const spruce_tokenizer *t, uint64_t seed,
                 uint32_t **ids, spruce_data_window **w, int nsamples)
{
    int count;
    cr_assert_eq(spruce_data_calib(p, f, t, 1, nsamples, 16, seed, NULL, NULL, ids, w, &count), 0,
                 "%s", spruce_errdetail());
    cr_assert_eq(count, nsamples);
}

Test(textdata, text_windows_reproducible)
{
    NEED(d, "llama3");
    spruce_tokenizer *t;
    uint32_t *a, *b, *c, *all;
    spruce_data_window *wa, *wb, *wc;
    size_t len, n;
    int i, differ = 0;
    char *s = joined("tests/hard-llama3.json", &len);
    const char *p = put("c.txt", s, len);
    cr_assert_eq(spruce_tokenizer_load(d, &t), 0);
    cr_assert_eq(spruce_tokenizer_encode(t, s, len, 1, &all, &n), 0);
    draw(p, SPRUCE_DATA_TEXT, t, 0, &a, &wa, 8);
    draw(p, SPRUCE_DATA_TEXT, t, 0, &b, &wb, 8);
    draw(p, SPRUCE_DATA_TEXT, t, 1, &c, &wc, 8);
    cr_assert_eq(memcmp(a, b, 8 * 16 * sizeof *a), 0, "same seed, same windows");
    for (i = 0; i < 8; i++) {
        cr_assert_eq(wa[i].doc, -1);
        cr_assert_leq(wa[i].start + 16, n - 1, "starts in [0, n - seqlen - 1]");
        cr_assert_eq(memcmp(a + i * 16, all + wa[i].start, 16 * sizeof *a), 0,
                     "window %d is the tokenized text at its start", i);
        differ |= wa[i].start != wc[i].start;
    }
    cr_assert(differ, "another seed draws other windows");
    free(a); free(b); free(c); free(wa); free(wb); free(wc); free(all); free(s);
    spruce_tokenizer_free(t);
}

Test(textdata, jsonl_skips_short_documents)
{
    NEED(d, "llama3");
    spruce_tokenizer *t;
    uint32_t *ids, *doc;
    spruce_data_window *w;
    size_t n;
    int i, count;
    const char *longdoc = "The quick brown fox jumps over the lazy dog again and again, while the "
                          "cat watches from the warm windowsill of the old stone house.";
    char buf[1024];
    const char *p;
    snprintf(buf, sizeof buf, "{\"text\": \"short\"}\n\n{\"text\": \"%s\"}\n{\"text\": \"tiny\"}\n",
             longdoc);
    p = put("c.jsonl", buf, strlen(buf));
    cr_assert_eq(spruce_tokenizer_load(d, &t), 0);
    cr_assert_eq(spruce_tokenizer_encode(t, longdoc, strlen(longdoc), 1, &doc, &n), 0);
    cr_assert_gt(n, 16);
    draw(p, SPRUCE_DATA_JSONL, t, 5, &ids, &w, 6);
    for (i = 0; i < 6; i++) {
        cr_assert_eq(w[i].doc, 2, "only line 3 is long enough (0-based 2)");
        cr_assert_eq(memcmp(ids + i * 16, doc + w[i].start, 16 * sizeof *ids), 0);
    }
    free(ids);
    free(w);
    p = put("s.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b c\"}\n", 30);
    cr_assert_neq(spruce_data_calib(p, SPRUCE_DATA_JSONL, t, 1, 2, 16, 0, NULL, NULL, &ids, &w,
                                    &count), 0);
    cr_assert(strstr(spruce_errdetail(), "s.jsonl") && strstr(spruce_errdetail(), "no document"),
              "%s", spruce_errdetail());
    p = put("x.jsonl", "{\"txt\": \"a\"}\n", 13);
    cr_assert_neq(spruce_data_calib(p, SPRUCE_DATA_JSONL, t, 1, 2, 16, 0, NULL, NULL, &ids, &w,
                                    &count), 0);
    cr_assert(strstr(spruce_errdetail(), "line 1"), "%s", spruce_errdetail());
    free(doc);
    spruce_tokenizer_free(t);
}

/* ---- through the program: text and its ids give the same results ---------- */

/* Run a shell command; its standard output (malloc'ed). */
static char *sh(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    char *s = NULL;
    size_t n = 0, r;
    char buf[4096];
    cr_assert_not_null(p);
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        s = realloc(s, n + r + 1);
        memcpy(s + n, buf, r);
        n += r;
    }
    s = realloc(s, n + 1);
    s[n] = 0;
    cr_assert_eq(pclose(p), 0, "failed: %s", cmd);
    return s;
}

/* A one-block model with Mistral's vocabulary and tokenizer in dir/m. */
static int mistral_model(const char **bin)
{
    char cmd[9000];
    const char *tok = tokenizer_fixture("mistral");
    struct stat st;
    *bin = getenv("SPRUCE_BIN");
    if (!*bin || stat(*bin, &st) != 0 || !tok) {
        cr_skip_test("needs SPRUCE_BIN and the mistral tokenizer fixture");
        return 0;
    }
    snprintf(cmd, sizeof cmd, "'%s' synth '%s/m' --hidden 32 --intermediate 64 --layers 1 "
             "--heads 2 --kv-heads 1 --vocab 32000 --max-position 64 >/dev/null 2>&1 && "
             "cp '%s/tokenizer.json' '%s/tokenizer_config.json' '%s/m/' && echo ok",
             *bin, dir, tok, tok, dir);
    free(sh(cmd));
    return 1;
}

Test(textdata, eval_text_equals_eval_ids)
{
    const char *bin;
    char cmd[9000], *a, *b;
    const char *text = "Once upon a time, there was a little robot named Bolt.\n"
                       "Bolt liked to read books about the sea, the stars and the moon.\n"
                       "One day Bolt found a map: \"Go north 3 miles!\" it said.\n";
    if (!mistral_model(&bin))
        return;
    put("story.txt", text, strlen(text));
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' tokenize m story.txt --add-special > ids.txt && "
             "'%s' eval m --data story.txt --seqlen 16 2>/dev/null | grep perplexity", dir, bin,
             bin);
    a = sh(cmd);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' eval m --data ids.txt --seqlen 16 2>/dev/null | "
             "grep perplexity", dir, bin);
    b = sh(cmd);
    cr_assert(strstr(a, "perplexity "), "%s", a);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
}

Test(textdata, run_prompt_text_equals_prompt_ids)
{
    const char *bin;
    char cmd[9000], *ids, *a, *b, *pa, *pb;
    if (!mistral_model(&bin))
        return;
    snprintf(cmd, sizeof cmd, "'%s' tokenize '%s/m' --text 'Once upon a time' --add-special", bin,
             dir);
    ids = sh(cmd);
    ids[strcspn(ids, "\n")] = 0;
    snprintf(cmd, sizeof cmd, "'%s' run '%s/m' --prompt 'Once upon a time' --steps 6 --json "
             "2>/dev/null", bin, dir);
    a = sh(cmd);
    snprintf(cmd, sizeof cmd, "'%s' run '%s/m' --prompt-ids '%s' --steps 6 --json 2>/dev/null",
             bin, dir, ids);
    b = sh(cmd);
    pa = strstr(a, "\"prompt\"");
    pb = strstr(b, "\"prompt\"");
    cr_assert(pa && pb && strstr(a, "\"text\""), "%s", a);
    /* the same prompt ids and the same generated ids */
    cr_assert_eq(strncmp(pa, pb, (size_t)(strstr(pa, "\"prompt_tokens_per_s\"") - pa)), 0,
                 "%s\n%s", a, b);
    free(ids);
    free(a);
    free(b);
}
