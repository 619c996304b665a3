/* cmd_run.c: `spruce run MODEL_DIR --prompt "ID ID ..." ...`: token-by-token
 * generation with a key/value cache on the runtime's linear layers. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "spruce_decode.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce run MODEL_DIR --prompt \"ID ID ...\" [--steps N] [--temperature T]\n"
            "                  [--seed S] [--sparse auto|off|csr|bitmask|nm] [--json] [--threads N]\n\n"
            "Generate tokens one by one with a key/value cache.  Every linear layer of the\n"
            "blocks runs on spruce's linear-layer object: with --sparse auto (default) in a\n"
            "sparse format where that measured faster than dense at batch 1, with --sparse off\n"
            "on dense OpenBLAS (same weights).  Greedy unless --temperature > 0.  Weights so\n"
            "large that the float32 activations overflow are an error (exit 1) naming the\n"
            "layer, the tensor and the position of the first NaN or infinity.\n\n"
            "  --prompt \"IDS\"      prompt token ids, separated by spaces (e.g. \"1\" for BOS)\n"
            "  --steps N          tokens to generate (default 64)\n"
            "  --temperature T    sample from softmax(logits / T) (default 0: greedy)\n"
            "  --seed S           random seed for sampling (default 0)\n"
            "  --sparse MODE      auto (default), off, or force one format: csr, bitmask,\n"
            "                     nm (2:4 layers)\n"
            "  --json             one JSON object: prompt, ids, tokens_per_s, ...\n"
            "  --threads N        threads (default: all cores)\n"
            "  -h, --help         this message\n\n"
            "Prints the generated ids, then tokens/s of the prompt and of the generation.\n"
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
static void print_json(const uint32_t *prompt, int nprompt, const uint32_t *gen, int steps,
                       double t_prompt, double t_gen, int mode, int sparse_layers, int layers)
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
    json_object_set_new(o, "prompt_tokens_per_s",
                        cli_json_real(t_prompt > 0 ? nprompt / t_prompt : 0.0));
    json_object_set_new(o, "tokens_per_s", cli_json_real(t_gen > 0 ? steps / t_gen : 0.0));
    json_object_set_new(o, "sparse", json_string(mode_name[mode]));
    json_object_set_new(o, "sparse_layers", json_integer(sparse_layers));
    json_object_set_new(o, "layers", json_integer(layers));
    json_dumpf(o, stdout, JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(o);
}

int spruce_cmd_run(int argc, char **argv)
{
    enum { O_PROMPT = 256, O_STEPS, O_TEMP, O_SEED, O_SPARSE, O_JSON, O_THREADS };
    static const struct option opts[] = {
        {"prompt", required_argument, NULL, O_PROMPT},
        {"steps", required_argument, NULL, O_STEPS},
        {"temperature", required_argument, NULL, O_TEMP},
        {"seed", required_argument, NULL, O_SEED},
        {"sparse", required_argument, NULL, O_SPARSE},
        {"json", no_argument, NULL, O_JSON},
        {"threads", required_argument, NULL, O_THREADS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prompt_s = NULL, *dir;
    long steps = 64, seed = 0, threads = 0;
    double temp = 0, t0, t_prompt, t_gen;
    int c, rc, json = 0, status = 1, nprompt = 0, i, mode = SPRUCE_DECODE_AUTO;
    spruce_model *m = NULL;
    spruce_decoder *d = NULL;
    const spruce_config *cfg;
    uint32_t *prompt = NULL, *gen = NULL;
    float *logits = NULL;
    uint64_t rng;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_PROMPT: prompt_s = optarg; break;
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
    if (optind != argc - 1 || !prompt_s) {
        cli_fail("run: expected MODEL_DIR and --prompt \"IDS\" (try 'spruce run --help')");
        return 2;
    }
    dir = argv[optind];
    cli_set_threads(threads);
    if ((rc = spruce_model_open(dir, &m))) {
        cli_error(rc, "run: %s", dir);
        goto done;
    }
    cfg = spruce_model_config(m);
    if (parse_prompt(prompt_s, cfg->vocab_size, &prompt, &nprompt)) {
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
    if ((rc = spruce_decoder_create(m, nprompt + (int)steps, mode, &d))) {
        cli_error(rc, "run: %s", dir);
        goto done;
    }
    t0 = spruce_clock_now();
    if ((rc = spruce_decoder_prefill(d, prompt, nprompt, logits))) {
        cli_error(rc, "run: prompt");
        goto done;
    }
    t_prompt = spruce_clock_now() - t0;
    rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)seed;
    t0 = spruce_clock_now();
    for (i = 0; i < steps; i++) {
        gen[i] = choose(logits, cfg->vocab_size, temp, &rng);
        if (i + 1 < steps && (rc = spruce_decoder_step(d, gen[i], logits))) {
            cli_error(rc, "run: step %d", i);
            goto done;
        }
    }
    t_gen = spruce_clock_now() - t0;
    if (json) {
        print_json(prompt, nprompt, gen, (int)steps, t_prompt, t_gen, mode,
                   spruce_decoder_sparse_layers(d), SPRUCE_NPROJ * cfg->num_hidden_layers);
    } else {
        for (i = 0; i < steps; i++)
            printf("%s%u", i ? " " : "", gen[i]);
        printf("\n");
        printf("prompt: %d tokens, %.1f tokens/s; generation: %ld tokens, %.1f tokens/s; "
               "%d of %d linear layers sparse\n", nprompt,
               t_prompt > 0 ? nprompt / t_prompt : 0.0, steps, t_gen > 0 ? steps / t_gen : 0.0,
               spruce_decoder_sparse_layers(d), SPRUCE_NPROJ * cfg->num_hidden_layers);
    }
    status = 0;
done:
    spruce_decoder_free(d);
    spruce_model_free(m);
    free(prompt);
    free(gen);
    free(logits);
    return status;
}
