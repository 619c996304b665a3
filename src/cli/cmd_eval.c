/* cmd_eval.c: `spruce eval MODEL_DIR --data FILE [--seqlen T] [--act-mib N] [--threads N]
 * [--logits OUT]`: perplexity over non-overlapping windows of T tokens, and optionally
 * every window's logits. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "eval_logits.h"
#include "spruce_decode.h"
#include "spruce_dist.h"
#include "spruce_model.h"
#include "spruce_qmatrix.h"
#include "spruce_tokens.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce eval MODEL_DIR --data FILE [--data-format F] [--seqlen T]\n"
            "                   [--act-mib N] [--threads N] [--logits OUT]\n"
            "                   [--dtype f32|own|bf16|int8|int4] [--groupsize G] [--json]\n\n"
            "Perplexity of a Hugging Face checkpoint (llama, mistral, qwen2, qwen3, gemma2,\n"
            "gemma3_text, phi3, opt) on a token file: exp(mean next-token negative\n"
            "log-likelihood) over the non-overlapping windows of T tokens of FILE, each\n"
            "window predicting T - 1 tokens.  The last line printed is 'perplexity <value>'.\n"
            "Weights so large that the float32 activations overflow are an error (exit 1)\n"
            "naming the layer, the tensor, the window and the position where the first NaN\n"
            "or infinity appears.\n\n"
            "  --data FILE     token ids (.u16 / .u32 raw little-endian, or decimal ids), a\n"
            "                  UTF-8 text or JSON lines with a \"text\" per line (.jsonl);\n"
            "                  text is tokenized once, whole, with MODEL_DIR's tokenizer.json\n"
            "                  and the special tokens its post-processor adds, as the\n"
            "                  published code evaluates WikiText-2; jsonl each document on\n"
            "                  its own; the windows' remainder is dropped\n"
            "  --data-format F ids, u16, u32, text or jsonl: how to read FILE (default: by\n"
            "                  its name and content; the reading used is printed)\n"
            "  --seqlen T      window length (default min(2048, max_position_embeddings);\n"
            "                  longer ones run as transformers runs them, after a warning)\n"
            "  --act-mib N     MiB of activations kept at once (default 2048); more windows\n"
            "                  than fit take further passes over the blocks (1..1048576)\n"
            "  --threads N     threads for the forward (default: all cores)\n"
            "  --dtype T       the linear layers' values: f32 (default: the checkpoint's,\n"
            "                  decoded to float32), or as the runtime holds them in a type,\n"
            "                  to measure what 'spruce run --dtype T' computes with: own (a\n"
            "                  compressed checkpoint's quantized levels, bf16 for BF16\n"
            "                  weights), bf16, int8 (a symmetric grid per row) or int4 (per\n"
            "                  group of G columns); the products run on OpenBLAS either way\n"
            "  --groupsize G   int4's columns per scale, 32 to 256 (default 128)\n"
            "  --json          print one JSON object: perplexity, windows, seqlen, seconds,\n"
            "                  dtype\n"
            "  --logits OUT    also write the logits of every position of every window to OUT:\n"
            "                  float32 little-endian, [window][position][vocab], no header\n"
            "                  (windows x T x vocab_size x 4 bytes); OUT appears when complete\n"
            "  -h, --help      this message\n\n"
            "Under 'mpirun -np R' (spruce configured --with-mpi) rank r evaluates its\n"
            "contiguous share of the windows and rank 0 prints the perplexity of all of\n"
            "them (--logits needs one process).\n");
}

static void eval_progress(void *ctx, int layer, int nlayers)
{
    double t0 = *(double *)ctx, el = spruce_clock_now() - t0;
    fprintf(stderr, "eval: block %d/%d  %.1f s  ETA %.1f s\n", layer + 1, nlayers, el,
            el / (layer + 1) * (nlayers - layer - 1));
}

int spruce_cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"data-format", required_argument, NULL, 'f'},
        {"seqlen", required_argument, NULL, 's'},
        {"act-mib", required_argument, NULL, 'a'},
        {"threads", required_argument, NULL, 't'},
        {"logits", required_argument, NULL, 'l'},
        {"dtype", required_argument, NULL, 'D'},
        {"groupsize", required_argument, NULL, 'g'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *dir, *logits_path = NULL, *fmt_name = NULL;
    spruce_data_format fmt;
    spruce_tokenizer *tok = NULL;
    eval_logits lo = {NULL, NULL, NULL};
    long seqlen = 0, threads = 0, act_mib = 0, groupsize = 0;
    int dtype = SPRUCE_EVAL_BLAS, json = 0;
    spruce_eval_opts eo;
    spruce_model *m = NULL;
    uint32_t *ids = NULL;
    size_t n = 0;
    double ppl = 0, t0, nll = 0;
    int64_t first, count;
    int c, rc, nwin = 0, status = 1, failed = 0;
    const spruce_config *cfg = NULL;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'f': fmt_name = optarg; break;
        case 'l': logits_path = optarg; break;
        case 'j': json = 1; break;
        case 'D':
            if (!strcmp(optarg, "own"))
                dtype = SPRUCE_DECODE_OWN_DTYPE;
            else if (!strcmp(optarg, "f32"))
                dtype = SPRUCE_EVAL_BLAS;
            else if ((dtype = spruce_dtype_parse(optarg)) < 0) {
                cli_fail("eval: --dtype: expected f32, own, bf16, int8 or int4, got '%s'", optarg);
                return 2;
            }
            break;
        case 'g':
            if (cli_parse_groupsize("eval", optarg, &groupsize))
                return 2;
            break;
        case 's':
            if (cli_parse_int("--seqlen", optarg, 2, 1 << 20, &seqlen))
                return 2;
            break;
        case 'a':
            if (cli_parse_int("--act-mib", optarg, 1, 1 << 20, &act_mib))
                return 2;
            break;
        case 't':
            if (cli_parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default:
            cli_fail("eval: unknown or incomplete option '%s' (try 'spruce eval --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1 || !data) {
        cli_fail("eval: expected MODEL_DIR and --data FILE (try 'spruce eval --help')");
        return 2;
    }
    dir = argv[optind];
    if (logits_path && spruce_dist_size() > 1) {
        cli_fail("eval: --logits is written by one process: run without mpirun");
        return 2;
    }
    cli_set_threads(threads);

    /* every rank reads the model and the data; a failure on any stops all */
    if ((rc = spruce_model_open_lazy(dir, &m))) {
        cli_error(rc, "eval: %s", dir);
        failed = 1;
    } else if (cfg = spruce_model_config(m), cli_model_seqlen("eval", cfg, dir, &seqlen)) {
        status = 2;
        failed = 1;
    } else if (cli_data_open("eval", "--data", data, fmt_name, dir, &fmt, &tok)) {
        failed = 1;
    } else if ((rc = spruce_data_read_ids(data, fmt, tok, 1, NULL, NULL, &ids, &n)) ||
               (rc = spruce_tokens_check(ids, n, (uint32_t)cfg->vocab_size, data))) {
        cli_error(rc, "eval: --data");
        failed = 1;
    } else if (n < (size_t)seqlen) {
        cli_fail("eval: %s holds %zu tokens, shorter than one window of %ld", data, n, seqlen);
        failed = 1;
    } else if (n / (size_t)seqlen < (size_t)spruce_dist_size()) {
        cli_fail("eval: %s holds %zu windows of %ld tokens for %d ranks (each needs one)", data,
                 n / (size_t)seqlen, seqlen, spruce_dist_size());
        failed = 1;
    }
    if (cli_agree(failed))
        goto done;
    fprintf(stderr, "eval: %s on %s: %zu tokens%s, %zu windows of %ld tokens (%zu tokens used, "
            "the last %zu dropped)\n", dir, data, n,
            tok ? " (with the tokenizer's special tokens)" : "", n / (size_t)seqlen, seqlen,
            n / (size_t)seqlen * (size_t)seqlen, n % (size_t)seqlen);
    t0 = spruce_clock_now();
    spruce_eval_opts_init(&eo);
    if (act_mib)
        eo.act_bytes = (size_t)act_mib << 20;
    eo.progress = eval_progress;
    eo.ctx = &t0;
    eo.dtype = dtype;
    eo.groupsize = (int)groupsize;
    if (logits_path) {
        if ((rc = eval_logits_open(&lo, logits_path))) {
            cli_error(rc, "eval: --logits");
            goto done;
        }
        eo.logits = eval_logits_write;
        eo.logits_ctx = &lo;
    }
    /* this rank's contiguous share of the windows; the sums of the shares'
     * log-likelihoods in rank order give the perplexity of all of them */
    spruce_dist_share((int64_t)(n / (size_t)seqlen), &first, &count);
    eo.first_window = (size_t)first;
    eo.nll_sum = &nll;
    rc = spruce_model_perplexity_opts(m, ids + (size_t)first * (size_t)seqlen,
                                      (size_t)count * (size_t)seqlen, (int)seqlen, &eo, &ppl,
                                      &nwin);
    if (rc)
        cli_error(rc, "eval: %s", dir);
    if (cli_agree(rc != 0))
        goto done;
    if (spruce_dist_size() > 1) {
        if ((rc = spruce_dist_allreduce_sum_f64(&nll, 1))) {
            cli_error(rc, "eval: summing the ranks' log-likelihoods");
            goto done;
        }
        nwin = (int)(n / (size_t)seqlen);
        ppl = exp(nll / ((double)nwin * (double)(seqlen - 1)));
    }
    if (logits_path) {
        if ((rc = eval_logits_close(&lo, 1))) {
            cli_error(rc, "eval: --logits");
            goto done;
        }
        fprintf(stderr, "eval: wrote the logits of %d windows x %ld positions x %d to %s\n",
                nwin, seqlen, cfg->vocab_size, logits_path);
    }
    if (json) {
        printf("{\"perplexity\": %.6f, \"windows\": %d, \"seqlen\": %ld, \"seconds\": %.3f, "
               "\"dtype\": \"%s\"}\n", ppl, nwin, seqlen, spruce_clock_now() - t0,
               dtype == SPRUCE_EVAL_BLAS ? "f32" : dtype == SPRUCE_DECODE_OWN_DTYPE
                                                       ? "own" : spruce_dtype_name(dtype));
    } else {
        printf("windows %d x %ld tokens, %.2f s%s%s\n", nwin, seqlen, spruce_clock_now() - t0,
               dtype == SPRUCE_EVAL_BLAS ? "" : ", linear layers in ",
               dtype == SPRUCE_EVAL_BLAS ? "" : dtype == SPRUCE_DECODE_OWN_DTYPE
                                                    ? "their own type" : spruce_dtype_name(dtype));
        printf("perplexity %.4f\n", ppl);
    }
    status = 0;
done:
    eval_logits_close(&lo, 0);
    free(ids);
    spruce_tokenizer_free(tok);
    spruce_model_free(m);
    return status;
}
