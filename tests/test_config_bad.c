/* test_config_bad.c: hostile and inconsistent config.json files: every key has
 * a bound and every product of keys is checked (the message names the keys),
 * duplicate keys are refused, a config that drops layers of its checkpoint is
 * refused, and sizes built from a config and token counts never wrap. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_testutil.h"
#include "model_internal.h"
#include "spruce_ckpt.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"

/* ---- helpers ------------------------------------------------------------------ */

typedef struct {
    long hidden, inter, layers, heads, kv, head_dim, vocab, maxpos; /* head_dim 0: absent */
} keys;

static keys small(void)
{
    keys k = {64, 128, 2, 4, 2, 0, 128, 64};
    return k;
}

/* config.json text of k (a llama). */
static char *json_of(keys k)
{
    static char buf[1024];
    char hd[64] = "";
    if (k.head_dim)
        snprintf(hd, sizeof hd, ", \"head_dim\": %ld", k.head_dim);
    snprintf(buf, sizeof buf, "{\"model_type\": \"llama\", \"hidden_size\": %ld, "
             "\"intermediate_size\": %ld, \"num_hidden_layers\": %ld, \"num_attention_heads\": "
             "%ld, \"num_key_value_heads\": %ld, \"vocab_size\": %ld, "
             "\"max_position_embeddings\": %ld%s}", k.hidden, k.inter, k.layers, k.heads, k.kv,
             k.vocab, k.maxpos, hd);
    return buf;
}

/* k is refused with SPRUCE_EFORMAT and a message holding the file and each needle. */
static void refused(keys k, const char *n1, const char *n2)
{
    spruce_config c;
    const char *json = json_of(k);
    int rc = spruce_config_parse(json, "hostile/config.json", &c);
    cr_assert_eq(rc, SPRUCE_EFORMAT, "expected SPRUCE_EFORMAT, got %d (%s) for %s", rc,
                 spruce_errdetail(), json);
    cr_assert(strstr(spruce_errdetail(), "hostile/config.json"), "no file in '%s'",
              spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), n1), "no '%s' in '%s'", n1, spruce_errdetail());
    if (n2)
        cr_assert(strstr(spruce_errdetail(), n2), "no '%s' in '%s'", n2, spruce_errdetail());
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "%s", path);
    cr_assert(fputs(text, f) >= 0);
    cr_assert_eq(fclose(f), 0);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;
    cr_assert(f, "%s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = calloc((size_t)n + 1, 1);
    cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    return buf;
}

/* A synth checkpoint of `layers` blocks in a fresh directory under root. */
static char *synth_model(const char *root, int layers, int heads, int kv)
{
    spruce_synth_config s;
    char *dir = malloc(strlen(root) + 8);
    sprintf(dir, "%s/m", root);
    spruce_synth_defaults(&s);
    s.hidden = 64;
    s.intermediate = 128;
    s.layers = layers;
    s.heads = heads;
    s.kv_heads = kv;
    s.vocab = 128;
    s.max_position = 64;
    cr_assert_eq(spruce_synth_write(dir, &s, 0), 0, "%s", spruce_errdetail());
    return dir;
}

/* ---- bounds and products ------------------------------------------------------------ */

Test(config_bad, fixture_head_dim_overflow_is_refused_before_any_size)
{
    const char *root = getenv("SPRUCE_FIXTURES");
    char path[1200], cfgpath[1200], *tmp, *dir, *text;
    spruce_model *m = NULL;
    spruce_config c;
    struct stat st;
    int rc;
    snprintf(path, sizeof path, "%s/bad/config/head_dim_overflow.json", root ? root : "");
    if (!root || stat(path, &st) != 0) {
        cr_skip_test("bad/config/head_dim_overflow.json not found: set SPRUCE_FIXTURES to "
                     "the directory holding bad/config/");
        return;
    }
    cr_assert_eq(spruce_config_load(path, &c), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "head_dim"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "536870920"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), path), "%s", spruce_errdetail());
    /* the same config beside real weights of its other keys (1 block of 8 heads) */
    tmp = tmp_dir();
    dir = synth_model(tmp, 1, 8, 8);
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
    text = read_text(path);
    write_text(cfgpath, text);
    free(text);
    rc = spruce_model_open(dir, &m);
    cr_assert_eq(rc, SPRUCE_EFORMAT, "rc %d: %s", rc, spruce_errdetail());
    cr_assert_null(m);
    cr_assert(strstr(spruce_errdetail(), "head_dim"), "%s", spruce_errdetail());
    rm_tree(tmp);
    free(tmp);
    free(dir);
}

Test(config_bad, every_key_has_a_bound)
{
    keys k;
    k = small(); k.hidden = SPRUCE_MAX_HIDDEN + 1L;
    refused(k, "hidden_size", "1048577");
    k = small(); k.inter = SPRUCE_MAX_INTERMEDIATE + 1L;
    refused(k, "intermediate_size", NULL);
    k = small(); k.layers = SPRUCE_MAX_LAYERS + 1L;
    refused(k, "num_hidden_layers", NULL);
    k = small(); k.heads = SPRUCE_MAX_HEADS * 2L; k.kv = k.heads;
    refused(k, "num_attention_heads", NULL);
    k = small(); k.kv = SPRUCE_MAX_HEADS + 1L;
    refused(k, "num_key_value_heads", "65537");
    k = small(); k.head_dim = SPRUCE_MAX_HEAD_DIM + 2L;
    refused(k, "head_dim", NULL);
    k = small(); k.head_dim = 536870920L;        /* the fixture's value */
    refused(k, "head_dim", "536870920");
    k = small(); k.vocab = SPRUCE_MAX_VOCAB + 1L;
    refused(k, "vocab_size", NULL);
    k = small(); k.maxpos = SPRUCE_MAX_POSITIONS + 1L;
    refused(k, "max_position_embeddings", NULL);
    k = small(); k.vocab = 4294967296L;          /* beyond int */
    refused(k, "vocab_size", "4294967296");
}

Test(config_bad, products_of_keys_name_both_keys)
{
    keys k;
    /* 8 x 65536 = 2^19 fits; 1024 x 2048 = 2^21 does not */
    k = small(); k.hidden = 1024; k.heads = 1024; k.kv = 1024; k.head_dim = 2048;
    refused(k, "num_attention_heads (1024) x head_dim (2048)", NULL);
    k = small(); k.hidden = 8192; k.vocab = SPRUCE_MAX_VOCAB;
    refused(k, "vocab_size (16777216) x hidden_size (8192)", NULL);
    k = small(); k.hidden = 1 << 15; k.inter = SPRUCE_MAX_INTERMEDIATE;
    refused(k, "intermediate_size (4194304) x hidden_size (32768)", NULL);
    /* head_dim from hidden_size / num_attention_heads has head_dim's bound */
    k = small(); k.hidden = SPRUCE_MAX_HIDDEN; k.heads = 1; k.kv = 1; k.vocab = 16;
    refused(k, "hidden_size (1048576) / num_attention_heads (1)", "head_dim");
}

Test(config_bad, the_bounds_themselves_are_accepted)
{
    spruce_config c;
    keys k = {SPRUCE_MAX_HIDDEN, 1 << 16, SPRUCE_MAX_LAYERS, 16, 16, SPRUCE_MAX_HEAD_DIM,
              1 << 16, SPRUCE_MAX_POSITIONS};
    cr_assert_eq(spruce_config_parse(json_of(k), "x", &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(c.hidden_size, SPRUCE_MAX_HIDDEN);
    cr_assert_eq((long)c.num_attention_heads * c.head_dim, SPRUCE_MAX_HIDDEN);
    k = small(); k.vocab = SPRUCE_MAX_VOCAB; k.inter = SPRUCE_MAX_INTERMEDIATE;
    cr_assert_eq(spruce_config_parse(json_of(k), "x", &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(c.vocab_size, SPRUCE_MAX_VOCAB);
}

/* ---- duplicate keys --------------------------------------------------------------- */

Test(config_bad, duplicate_keys_are_refused)
{
    spruce_config c;
    char text[1200], *tmp, path[1100];
    const char *base = json_of(small());
    /* the same text with hidden_size given twice */
    snprintf(text, sizeof text, "{\"hidden_size\": 128, %s", base + 1);
    cr_assert_eq(spruce_config_parse(base, "x", &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_config_parse(text, "dup/config.json", &c), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "dup/config.json"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "duplicate"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "hidden_size"), "%s", spruce_errdetail());
    tmp = tmp_dir();
    snprintf(path, sizeof path, "%s/config.json", tmp);
    write_text(path, text);
    cr_assert_eq(spruce_config_load(tmp, &c), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), path), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "duplicate"), "%s", spruce_errdetail());
    rm_tree(tmp);
    free(tmp);
}

Test(config_bad, a_buffer_is_parsed_to_its_length)
{
    spruce_config c;
    const char *base = json_of(small());
    size_t n = strlen(base);
    char *buf = malloc(n + 8);
    memcpy(buf, base, n);
    memcpy(buf + n, "garbage!", 8);      /* no NUL: only n bytes are JSON */
    cr_assert_eq(spruce__config_parse_buffer(buf, n, "buf", &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(c.hidden_size, 64);
    cr_assert_eq(spruce__config_parse_buffer(buf, n + 8, "buf", &c), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "buf"), "%s", spruce_errdetail());
    cr_assert_eq(spruce__config_parse_buffer(buf, 0, "buf", &c), SPRUCE_EFORMAT);
    free(buf);
}

/* ---- config against checkpoint ------------------------------------------------------ */

Test(config_bad, fewer_layers_than_the_checkpoint_are_refused)
{
    char *tmp = tmp_dir(), *dir = synth_model(tmp, 3, 4, 2), cfgpath[1200], *text, *p;
    spruce_model *m = NULL;
    int rc;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    spruce_model_free(m);
    m = NULL;
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
    text = read_text(cfgpath);
    cr_assert((p = strstr(text, "\"num_hidden_layers\": 3")), "%s", text);
    p[strlen("\"num_hidden_layers\": ")] = '2';
    write_text(cfgpath, text);
    rc = spruce_model_open(dir, &m);
    cr_assert_eq(rc, SPRUCE_ESHAPE, "rc %d: %s", rc, spruce_errdetail());
    cr_assert_null(m);
    cr_assert(strstr(spruce_errdetail(), "model.layers.2.*"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "num_hidden_layers is 2"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), dir), "%s", spruce_errdetail());
    /* a config with more layers than the checkpoint names the missing tensor */
    p[strlen("\"num_hidden_layers\": ")] = '4';
    write_text(cfgpath, text);
    cr_assert_eq(spruce_model_open(dir, &m), SPRUCE_ENOTFOUND, "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "model.layers.3."), "%s", spruce_errdetail());
    free(text);
    rm_tree(tmp);
    free(tmp);
    free(dir);
}

/* ---- sizes from configs and token counts --------------------------------------------- */

Test(config_bad, workspace_refuses_widths_beyond_int)
{
    /* A config built by hand, past the parser: 8 x 536870920 wraps to 64 in
     * int, the shape the old workspace was sized for. */
    spruce_config c;
    spruce_fwd_ws *ws;
    keys k = small();
    cr_assert_eq(spruce_config_parse(json_of(k), "x", &c), 0);
    c.num_attention_heads = 8;
    c.num_key_value_heads = 8;
    c.head_dim = 536870920;
    ws = spruce_fwd_ws_alloc(&c, 4, 1);
    cr_assert_null(ws, "a workspace for a query width of 2^32 + 64");
    spruce_fwd_ws_free(ws);
    cr_assert_null(spruce_fwd_ws_alloc(&c, INT_MAX, INT_MAX));
}

Test(config_bad, calibration_activations_that_overflow_are_refused)
{
    char *tmp = tmp_dir(), *dir = synth_model(tmp, 1, 4, 2);
    spruce_model *m = NULL;
    spruce_pipeline_opts o;
    uint32_t ids[64] = {0};
    int rc;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    spruce_pipeline_opts_init(&o);
    o.prune.method = SPRUCE_METHOD_WANDA;
    /* INT_MAX samples of INT_MAX tokens x 64 floats: 2^70 bytes */
    rc = spruce_pipeline_run(m, ids, INT_MAX, INT_MAX, NULL, &o, NULL);
    cr_assert_eq(rc, SPRUCE_EINVAL, "rc %d: %s", rc, spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "overflow"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "hidden_size"), "%s", spruce_errdetail());
    spruce_model_free(m);
    rm_tree(tmp);
    free(tmp);
    free(dir);
}

Test(config_bad, synth_writes_nothing_its_reader_refuses)
{
    char *tmp = tmp_dir(), dir[1100];
    spruce_synth_config s;
    spruce_synth_defaults(&s);
    s.hidden = 64;
    s.intermediate = 128;
    s.layers = 1;
    s.vocab = 128;
    s.max_position = SPRUCE_MAX_POSITIONS + 1;
    snprintf(dir, sizeof dir, "%s/m", tmp);
    cr_assert_eq(spruce_synth_write(dir, &s, 0), SPRUCE_EINVAL, "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "max_position"), "%s", spruce_errdetail());
    cr_assert(!exists(dir), "%s was written", dir);
    s.max_position = SPRUCE_MAX_POSITIONS;
    cr_assert_eq(spruce_synth_write(dir, &s, 0), 0, "%s", spruce_errdetail());
    rm_tree(tmp);
    free(tmp);
}
