/* cmd_run.c: `spruce run MODEL_DIR --prompt "ID ID ..." ...`: token-by-token
 * generation with a key/value cache on the runtime's linear layers. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_tokenizer.h"
#include "spruce_tokens.h"
#include "spruce_memstat.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

#define MAX_EOS 8

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce run MODEL_DIR (--prompt TEXT | --prompt-ids \"ID ID ...\") [--steps N]\n"
            "                  [--temperature T]\n"
            "                  [--seed S] [--sparse auto|off|csr|bitmask|nm]\n"
            "                  [--dtype own|f32|bf16|int8|int4] [--groupsize G] [--json]\n"
            "                  [--verbose] [--threads N]\n\n"
            "Generate tokens one by one with a key/value cache.  Every linear layer of the\n"
            "blocks runs on spruce's linear-layer object: with --sparse auto (default) in a\n"
            "sparse format where that measured faster than dense at batch 1, with --sparse off\n"
            "on dense OpenBLAS (same weights).  Greedy unless --temperature > 0.  Weights so\n"
            "large that the float32 activations overflow are an error (exit 1) naming the\n"
            "layer, the tensor and the position of the first NaN or infinity.\n\n"
            "  --prompt TEXT      the prompt as text, tokenized with MODEL_DIR/tokenizer.json\n"
            "                     (with its post-processor's special tokens); the output is\n"
            "                     streamed as text and stops at the end-of-sequence token.\n"
            "                     Without a tokenizer.json, TEXT is read as ids (as before)\n"
            "  --prompt-ids \"IDS\" prompt token ids, separated by spaces (e.g. \"1\" for BOS)\n"
            "  --steps N          at most N tokens to generate (default 64)\n"
            "  --temperature T    sample from softmax(logits / T) (default 0: greedy)\n"
            "  --seed S           random seed for sampling (default 0)\n"
            "  --sparse MODE      auto (default), off, or force one format: csr, bitmask,\n"
            "                     nm (2:4 layers)\n"
            "  --dtype T          the weights' value type: own (default: the checkpoint's,\n"
            "                     bf16 for BF16 weights, held without a float32 copy; a\n"
            "                     compressed-tensors checkpoint's quantized layers on their\n"
            "                     own levels: int8 per row, int4 in groups of 32..256;\n"
            "                     float32 otherwise), or convert to f32, bf16, int8 (a\n"
            "                     symmetric grid per row) or int4 (per group of G columns);\n"
            "                     the head follows (int4: int8).  Never converted unless\n"
            "                     asked\n"
            "  --groupsize G      int4's columns per scale, 32 to 256 (default 128)\n"
            "  --verbose          also print what each linear layer runs (format, value\n"
            "                     type, the kernel variant the planner chose and why), the\n"
            "                     weights' bytes as held and the resident memory\n"
            "  --json             one JSON object: prompt, ids, text (with a tokenizer),\n"
            "                     tokens_per_s, dtype, weight_bytes, resident_bytes, ...\n"
            "  --threads N        threads (default: all cores)\n"
            "  -h, --help         this message\n\n"
            "Prints the generated text (with a tokenizer) or ids, then tokens/s of the\n"
            "prompt and of the generation.\n"
            "Prompt and steps beyond max_position_embeddings run as transformers' generate runs\n"
            "them, after a warning (rope_type dynamic: the prompt rotates with the frequencies\n"
            "of its length, each generated token at position p with those of a p + 1 token\n"
            "sequence; cached keys keep theirs).\n");
}

/* Whitespace-separated ids; -1 (after a message) on anything else. */
static int parse_prompt(const char *s, int vocab, uint32_t **out, int *n)
{
    int cap = 16, k = 0;
    uint32_t *ids = malloc((size_t)cap * sizeof *ids);
    char *end;
    if (!ids)
        return -1;
    while (*s) {
        unsigned long v;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == ',')
            s++;
        if (!*s)
            break;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (end == s || errno || v >= (unsigned long)vocab || (*end && *end != ' ' &&
                                                               *end != '\t' && *end != '\n' &&
                                                               *end != ',')) {
            cli_fail("--prompt: expected token ids below the vocabulary size %d, got '%.20s'",
                     vocab, s);
            free(ids);
            return -1;
        }
        if (k == cap) {
            uint32_t *p = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!p) {
                free(ids);
                return -1;
            }
            ids = p;
        }
        ids[k++] = (uint32_t)v;
        s = end;
    }
    if (k == 0) {
        cli_fail("--prompt: no token ids");
        free(ids);
        return -1;
    }
    *out = ids;
    *n = k;
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Greedy (T <= 0) or a sample of softmax(logits / T). */
static uint32_t choose(const float *logits, int vocab, double T, uint64_t *rng)
{
    int j, best = 0;
    double mx, sum = 0, r, acc = 0;
    for (j = 1; j < vocab; j++)
        if (logits[j] > logits[best])
            best = j;
    if (T <= 0)
        return (uint32_t)best;
    mx = logits[best];
    for (j = 0; j < vocab; j++)
        sum += exp((logits[j] - mx) / T);
    r = (double)(rng_next(rng) >> 11) / 9007199254740992.0 * sum;
    for (j = 0; j < vocab; j++) {
        acc += exp((logits[j] - mx) / T);
        if (acc > r)
            return (uint32_t)j;
    }
    return (uint32_t)(vocab - 1);
}

/* One line of JSON: the prompt, the generated ids, the rates, the layers. */
/* The resident set now, in bytes (-1 unknown): anonymous plus mapped. */
static double resident_now(void)
{
    spruce_memstat ms;
    if (spruce_memstat_read(&ms) || ms.rss_anon < 0)
        return -1;
    return ms.rss_anon + (ms.rss_file > 0 ? ms.rss_file : 0);
}

static void print_json(const spruce_decoder *d, const uint32_t *prompt, int nprompt,
                       const uint32_t *gen, int steps,
                       const char *text, double t_prompt, double t_gen, int mode,
                       int sparse_layers, int layers)
{
    static const char *mode_name[] = {"off", "auto", "csr", "bitmask", "nm"};
    json_t *o = json_object(), *p = json_array(), *g = json_array();
    int i;
    for (i = 0; i < nprompt; i++)
        json_array_append_new(p, json_integer(prompt[i]));
    for (i = 0; i < steps; i++)
        json_array_append_new(g, json_integer(gen[i]));
    json_object_set_new(o, "prompt", p);
    json_object_set_new(o, "ids", g);
    if (text)
        json_object_set_new(o, "text", json_string(text));
    json_object_set_new(o, "prompt_tokens_per_s",
                        cli_json_real(t_prompt > 0 ? nprompt / t_prompt : 0.0));
    json_object_set_new(o, "tokens_per_s", cli_json_real(t_gen > 0 ? steps / t_gen : 0.0));
    json_object_set_new(o, "sparse", json_string(mode_name[mode]));
    json_object_set_new(o, "sparse_layers", json_integer(sparse_layers));
    json_object_set_new(o, "layers", json_integer(layers));
    json_object_set_new(o, "dtype", json_string(spruce_dtype_name(spruce_decoder_dtype(d))));
    json_object_set_new(o, "weight_bytes", json_integer((json_int_t)spruce_decoder_weight_bytes(d)));
    json_object_set_new(o, "resident_bytes", json_integer((json_int_t)resident_now()));
    json_dumpf(o, stdout, JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(o);
}

/* The end-of-sequence ids: eos_token_id of generation_config.json, else of
 * config.json (a number or a list), else the tokenizer's eos_token. */
static int eos_ids(const char *dir, const spruce_tokenizer *tok, int64_t *eos)
{
    static const char *files[2] = {"generation_config.json", "config.json"};
    char path[4200];
    int k, n = 0;
    for (k = 0; k < 2 && !n; k++) {
        json_t *j, *e;
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        if (!(j = json_load_file(path, 0, NULL)))
            continue;
        e = json_object_get(j, "eos_token_id");
        if (json_is_integer(e))
            eos[n++] = json_integer_value(e);
        else if (json_is_array(e)) {
            size_t i;
            for (i = 0; i < json_array_size(e) && n < MAX_EOS; i++)
                if (json_is_integer(json_array_get(e, i)))
                    eos[n++] = json_integer_value(json_array_get(e, i));
        }
        json_decref(j);
    }
    if (!n && tok && spruce_tokenizer_eos(tok) >= 0)
        eos[n++] = spruce_tokenizer_eos(tok);
    return n;
}

static int is_eos(const int64_t *eos, int neos, uint32_t id)
{
    int i;
    for (i = 0; i < neos; i++)
        if (eos[i] == (int64_t)id)
            return 1;
    return 0;
}

/* How many bytes of text[0..n) are final: without a trailing incomplete UTF-8
 * sequence or U+FFFD (byte-fallback bytes still waiting for the rest of
 * their character). */
static size_t stable_len(const char *t, size_t n)
{
    for (;;) {
        size_t p = n;
        while (p > 0 && ((unsigned char)t[p - 1] & 0xc0) == 0x80)
            p--;
        if (p == 0)
            return n;
        {
            unsigned char c = (unsigned char)t[p - 1];
            size_t need = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (n - (p - 1) < need)
                n = p - 1; /* incomplete */
            else if (need == 3 && !memcmp(t + p - 1, "\xef\xbf\xbd", 3))
                n = p - 1; /* U+FFFD */
            else
                return n;
        }
    }
}

/* Stream the text of gen[0..k): print what became final since last time. */
static int stream_text(const spruce_tokenizer *tok, const uint32_t *gen, int k, size_t *printed,
                       int flush)
{
    char *t;
    size_t n, st;
    int rc = spruce_tokenizer_decode(tok, gen, (size_t)k, 1, &t, &n);
    if (rc)
        return rc;
    st = flush ? n : stable_len(t, n);
    if (st > *printed) {
        fwrite(t + *printed, 1, st - *printed, stdout);
        fflush(stdout);
        *printed = st;
    }
    free(t);
    return 0;
}

/* The prompt's ids: --prompt-ids, or --prompt as text when the model has a
 * tokenizer.json (ids otherwise, as before, with a note). */
static int prompt_ids(const char *dir, const char *text, const char *ids_s, int vocab,
                      spruce_tokenizer **tok, uint32_t **prompt, int *nprompt)
{
    char tj[4200];
    uint32_t *v;
    size_t n;
    int rc;
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    if (access(tj, F_OK) == 0 && (rc = spruce_tokenizer_load(tj, tok))) {
        cli_error(rc, "run: tokenizer");
        return -1;
    }
    if (ids_s || !*tok) {
        if (!ids_s)
            fprintf(stderr, "run: %s has no tokenizer.json: --prompt is read as token ids\n", dir);
        return parse_prompt(ids_s ? ids_s : text, vocab, prompt, nprompt);
    }
    if ((rc = spruce_tokenizer_encode(*tok, text, strlen(text), 1, &v, &n)) ||
        (rc = spruce_tokens_check(v, n, (uint32_t)vocab, "--prompt"))) {
        cli_error(rc, "run: --prompt");
        return -1;
    }
    if (!n) {
        free(v);
        cli_fail("run: --prompt: the text gives no tokens");
        return -1;
    }
    *prompt = v;
    *nprompt = (int)n;
    return 0;
}

int spruce_cmd_run(int argc, char **argv)
{
    enum { O_PROMPT = 256, O_PROMPT_IDS, O_STEPS, O_TEMP, O_SEED, O_SPARSE, O_JSON, O_THREADS,
           O_DTYPE, O_GROUPSIZE, O_VERBOSE };
    static const struct option opts[] = {
        {"prompt", required_argument, NULL, O_PROMPT},
        {"prompt-ids", required_argument, NULL, O_PROMPT_IDS},
        {"steps", required_argument, NULL, O_STEPS},
        {"temperature", required_argument, NULL, O_TEMP},
        {"seed", required_argument, NULL, O_SEED},
        {"sparse", required_argument, NULL, O_SPARSE},
        {"json", no_argument, NULL, O_JSON},
        {"threads", required_argument, NULL, O_THREADS},
        {"dtype", required_argument, NULL, O_DTYPE},
        {"groupsize", required_argument, NULL, O_GROUPSIZE},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prompt_s = NULL, *prompt_ids_s = NULL, *dir;
    spruce_tokenizer *tok = NULL;
    int64_t eos[MAX_EOS];
    int neos = 0, ngen = 0;
    size_t printed = 0;
    char *text = NULL;
    long steps = 64, seed = 0, threads = 0, groupsize = 128;
    int verbose = 0;
    spruce_decode_opts dopts;
    double temp = 0, t0, t_prompt, t_gen;
    int c, rc, json = 0, status = 1, nprompt = 0, i, mode = SPRUCE_DECODE_AUTO;
    spruce_model *m = NULL;
    spruce_decoder *d = NULL;
    const spruce_config *cfg;
    uint32_t *prompt = NULL, *gen = NULL;
    float *logits = NULL;
    uint64_t rng;

    spruce_decode_opts_init(&dopts);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_DTYPE:
            if (!strcmp(optarg, "own"))
                dopts.dtype = SPRUCE_DECODE_OWN_DTYPE;
            else if ((dopts.dtype = spruce_dtype_parse(optarg)) < 0) {
                cli_fail("--dtype: expected own, f32, bf16, int8 or int4, got '%s'", optarg);
                return 2;
            }
            break;
        case O_GROUPSIZE:
            if (cli_parse_groupsize("run", optarg, &groupsize))
                return 2;
            break;
        case O_VERBOSE: verbose = 1; break;
        case O_PROMPT: prompt_s = optarg; break;
        case O_PROMPT_IDS: prompt_ids_s = optarg; break;
        case O_STEPS:
            if (cli_parse_int("--steps", optarg, 1, 1 << 20, &steps))
                return 2;
            break;
        case O_TEMP:
            if (cli_parse_float("--temperature", optarg, 0.0, 100.0, &temp))
                return 2;
            break;
        case O_SEED:
            if (cli_parse_int("--seed", optarg, 0, 2147483647L, &seed))
                return 2;
            break;
        case O_SPARSE:
            if (!strcmp(optarg, "auto"))
                mode = SPRUCE_DECODE_AUTO;
            else if (!strcmp(optarg, "off"))
                mode = SPRUCE_DECODE_DENSE;
            else if (!strcmp(optarg, "csr"))
                mode = SPRUCE_DECODE_CSR;
            else if (!strcmp(optarg, "bitmask"))
                mode = SPRUCE_DECODE_BITMASK;
            else if (!strcmp(optarg, "nm"))
                mode = SPRUCE_DECODE_NM;
            else {
                cli_fail("--sparse: expected auto, off, csr, bitmask or nm, got '%s'", optarg);
                return 2;
            }
            break;
        case O_JSON: json = 1; break;
        case O_THREADS:
            if (cli_parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default:
            cli_fail("run: unknown or incomplete option '%s' (try 'spruce run --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1 || !prompt_s == !prompt_ids_s) {
        cli_fail("run: expected MODEL_DIR and one of --prompt TEXT, --prompt-ids \"IDS\" (try "
                 "'spruce run --help')");
        return 2;
    }
    dir = argv[optind];
    cli_set_threads(threads);
    if ((rc = spruce_model_open_lazy(dir, &m))) {
        cli_error(rc, "run: %s", dir);
        goto done;
    }
    cfg = spruce_model_config(m);
    if (prompt_ids(dir, prompt_s, prompt_ids_s, cfg->vocab_size, &tok, &prompt, &nprompt)) {
        status = 2;
        goto done;
    }
    cli_length_warning("run", cfg, nprompt + steps, dir);
    gen = malloc((size_t)steps * sizeof *gen);
    logits = malloc((size_t)cfg->vocab_size * sizeof *logits);
    if (!gen || !logits) {
        cli_fail("run: out of memory");
        goto done;
    }
    if (!json)
        fprintf(stderr, "run: preparing %d blocks (%s)...\n", cfg->num_hidden_layers,
                mode == SPRUCE_DECODE_DENSE ? "dense" : mode == SPRUCE_DECODE_AUTO
                ? "sparse where faster" : "one sparse format");
    dopts.mode = (spruce_decode_mode)mode;
    dopts.groupsize = (int)groupsize;
    if ((rc = spruce_decoder_create_opts(m, nprompt + (int)steps, &dopts, &d))) {
        cli_error(rc, "run: %s", dir);
        goto done;
    }
    if (verbose) { /* what each linear layer runs, and the planner's choices */
        int l, p;
        for (l = 0; l < cfg->num_hidden_layers; l++)
            for (p = 0; p < SPRUCE_NPROJ; p++) {
                const spruce_linear *lin = spruce_decoder_linear(d, l, p);
                char desc[512];
                if (lin && spruce_linear_describe(lin, 1, desc, sizeof desc) >= 0)
                    fprintf(stderr, "run: layer %d %s: %s\n", l, spruce_proj_path((spruce_proj)p),
                            desc);
            }
    }
    t0 = spruce_clock_now();
    if ((rc = spruce_decoder_prefill(d, prompt, nprompt, logits))) {
        cli_error(rc, "run: prompt");
        goto done;
    }
    t_prompt = spruce_clock_now() - t0;
    rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)seed;
    t0 = spruce_clock_now();
    if (tok)
        neos = eos_ids(dir, tok, eos);
    for (i = 0; i < steps; i++) {
        gen[i] = choose(logits, cfg->vocab_size, temp, &rng);
        ngen = i + 1;
        if (tok && is_eos(eos, neos, gen[i]))
            break;
        if (tok && !json && (rc = stream_text(tok, gen, ngen, &printed, 0))) {
            cli_error(rc, "run: decoding");
            goto done;
        }
        if (i + 1 < steps && (rc = spruce_decoder_step(d, gen[i], logits))) {
            cli_error(rc, "run: step %d", i);
            goto done;
        }
    }
    t_gen = spruce_clock_now() - t0;
    if (tok) {
        size_t tl;
        if ((rc = spruce_tokenizer_decode(tok, gen, (size_t)ngen, 1, &text, &tl))) {
            cli_error(rc, "run: decoding");
            goto done;
        }
    }
    if (json) {
        print_json(d, prompt, nprompt, gen, ngen, text, t_prompt, t_gen, mode,
                   spruce_decoder_sparse_layers(d), spruce_decoder_linear_layers(d));
    } else {
        if (tok)
            stream_text(tok, gen, ngen, &printed, 1);
        else
            for (i = 0; i < ngen; i++)
                printf("%s%u", i ? " " : "", gen[i]);
        printf("\n");
        printf("prompt: %d tokens, %.1f tokens/s; generation: %d tokens%s, %.1f tokens/s; "
               "%d of %d linear layers sparse\n", nprompt,
               t_prompt > 0 ? nprompt / t_prompt : 0.0, ngen,
               ngen < steps ? " (stopped at end of sequence)" : "",
               t_gen > 0 ? ngen / t_gen : 0.0,
               spruce_decoder_sparse_layers(d), spruce_decoder_linear_layers(d));
        if (verbose) {
            double res = resident_now();
            printf("weights: %s, %.1f MiB as held (linear layers and head); resident %.1f MiB\n",
                   spruce_dtype_name(spruce_decoder_dtype(d)),
                   (double)spruce_decoder_weight_bytes(d) / 1048576.0,
                   res >= 0 ? res / 1048576.0 : -1.0);
        }
    }
    status = 0;
done:
    spruce_decoder_free(d);
    spruce_model_free(m);
    free(prompt);
    free(gen);
    free(logits);
    free(text);
    spruce_tokenizer_free(tok);
    return status;
}
