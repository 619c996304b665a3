/* cmd_synth.c: `spruce synth OUT_DIR [options]`: a deterministic random
 * LLaMA-shaped checkpoint, and optionally random token files for it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spruce_ckpt.h"
#include "spruce_family.h"
#include "spruce_tokens.h"

static void usage(FILE *f)
{
    spruce_synth_config d;
    spruce_synth_defaults(&d);
    fprintf(f,
            "usage: spruce synth OUT_DIR [options]\n\n"
            "Write a deterministic random LLaMA-shaped Hugging Face checkpoint (config.json +\n"
            "model.safetensors) to OUT_DIR, for benchmarks and demos on realistic shapes.\n"
            "Linear weights are N(0, 1/fan_in), norms near 1: activations stay in range.\n"
            "The same options always give the same bytes.\n\n"
            "model:\n"
            "  --hidden N          hidden size (default %d)\n"
            "  --intermediate N    MLP size (default %d)\n"
            "  --layers N          decoder layers (default %d)\n"
            "  --heads N           attention heads (default %d)\n"
            "  --kv-heads N        key/value heads, divides --heads (default %d)\n"
            "  --vocab N           vocabulary size (default %d)\n"
            "  --max-position N    max_position_embeddings (default %d)\n"
            "  --dtype T           f32, f16 or bf16 (default f32)\n"
            "  --family F          llama (default), mistral, qwen2, qwen3 (q/k norms; head_dim\n"
            "                      written to config.json), gemma2 or gemma3 (gemma3_text;\n"
            "                      tied head, sliding window max-position / 4, doc/checkpoints.md),\n"
            "                      phi3 (fused qkv_proj and gate_up_proj), opt (LayerNorms\n"
            "                      with biases, learned positions, fc1/fc2 with ReLU; tied\n"
            "                      head; --intermediate is ffn_dim, --kv-heads unused),\n"
            "                      mixtral or qwen3_moe (every block's MLP a mixture of experts)\n"
            "  --head-dim N        head size (default hidden / heads; any even N, so that\n"
            "                      heads x N may differ from hidden as in Qwen3)\n"
            "  --rope-scaling T    rope_scaling of config.json: linear, dynamic, yarn or llama3\n"
            "                      (low/high_freq_factor 1/4, original_max_position_embeddings\n"
            "                      = max-position / factor), or for phi3 longrope (short and\n"
            "                      long factors, original_max_position_embeddings = max-position\n"
            "                      / factor); default none\n"
            "  --rope-factor F     its factor (default 8 for llama3, 4 for the others)\n"
            "  --experts N         mixtral, qwen3_moe: experts per block (default 8)\n"
            "  --experts-per-tok K experts chosen per token (default 2)\n"
            "  --expert-intermediate N  an expert's width (default --intermediate)\n"
            "  --seed S            random seed (default 0)\n"
            "  --force             replace an existing non-empty OUT_DIR\n\n"
            "token files (ids uniform in [0, vocab); format by extension: .u16, .u32, .txt):\n"
            "  --calib FILE        also write calibration tokens to FILE\n"
            "  --eval FILE         also write evaluation tokens to FILE (a different stream)\n"
            "  --count N           tokens per file (default 16384 = 32 x 512)\n\n"
            "OUT_DIR is written as OUT_DIR.tmp-<pid> and renamed when complete; SIGINT,\n"
            "SIGTERM or SIGHUP stop after it (before the token files).  What a killed run\n"
            "left beside OUT_DIR is removed by the next run (and named).\n\n"
            "example:\n"
            "  spruce synth /tmp/m --hidden 1024 --intermediate 2816 --layers 2 --heads 16 \\\n"
            "      --calib /tmp/calib.u16 --eval /tmp/eval.u16\n"
            "  spruce synth /tmp/moe --family mixtral --hidden 2048 --intermediate 1408 \\\n"
            "      --experts 8 --experts-per-tok 2 --layers 4 --heads 16 --kv-heads 8\n",
            d.hidden, d.intermediate, d.layers, d.heads, d.kv_heads, d.vocab, d.max_position);
}

static int write_tokens(const char *path, uint32_t vocab, long count, uint64_t seed)
{
    uint32_t *ids = malloc((size_t)count * sizeof *ids);
    int rc;
    if (!ids) {
        cli_fail("%s: out of memory for %ld tokens", path, count);
        return 1;
    }
    spruce_tokens_random(ids, (size_t)count, vocab, seed);
    rc = spruce_tokens_save(path, ids, (size_t)count);
    free(ids);
    if (rc) {
        cli_error(rc, "writing tokens");
        return 1;
    }
    fprintf(stderr, "spruce synth: wrote %ld random tokens to %s\n", count, path);
    return 0;
}

int spruce_cmd_synth(int argc, char **argv)
{
    static const struct option opts[] = {
        {"hidden", required_argument, NULL, 'H'},
        {"intermediate", required_argument, NULL, 'I'},
        {"layers", required_argument, NULL, 'L'},
        {"heads", required_argument, NULL, 'A'},
        {"kv-heads", required_argument, NULL, 'K'},
        {"vocab", required_argument, NULL, 'V'},
        {"max-position", required_argument, NULL, 'P'},
        {"dtype", required_argument, NULL, 'D'},
        {"seed", required_argument, NULL, 'S'},
        {"force", no_argument, NULL, 'f'},
        {"calib", required_argument, NULL, 'c'},
        {"eval", required_argument, NULL, 'e'},
        {"count", required_argument, NULL, 'n'},
        {"family", required_argument, NULL, 'F'},
        {"head-dim", required_argument, NULL, 'd'},
        {"rope-scaling", required_argument, NULL, 'r'},
        {"rope-factor", required_argument, NULL, 'R'},
        {"experts", required_argument, NULL, 'X'},
        {"experts-per-tok", required_argument, NULL, 'k'},
        {"expert-intermediate", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    spruce_synth_config cfg;
    spruce_synth_family fam;
    double fv;
    const char *calib = NULL, *eval = NULL, *out;
    long v, count = 16384;
    int c, force = 0, rc;
    double t0;

    spruce_synth_defaults(&cfg);
    spruce_synth_family_defaults(&fam);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return 0;
        case 'H': if (cli_parse_int("--hidden", optarg, 1, 1 << 20, &v)) return 2; cfg.hidden = (int)v; break;
        case 'I': if (cli_parse_int("--intermediate", optarg, 1, 1 << 22, &v)) return 2; cfg.intermediate = (int)v; break;
        case 'L': if (cli_parse_int("--layers", optarg, 1, 1024, &v)) return 2; cfg.layers = (int)v; break;
        case 'A': if (cli_parse_int("--heads", optarg, 1, 4096, &v)) return 2; cfg.heads = (int)v; break;
        case 'K': if (cli_parse_int("--kv-heads", optarg, 1, 4096, &v)) return 2; cfg.kv_heads = (int)v; break;
        case 'V': if (cli_parse_int("--vocab", optarg, 1, 1 << 24, &v)) return 2; cfg.vocab = (int)v; break;
        case 'P': if (cli_parse_int("--max-position", optarg, 1, 1 << 24, &v)) return 2; cfg.max_position = (int)v; break;
        case 'S': if (cli_parse_int("--seed", optarg, 0, 2147483647L, &v)) return 2; cfg.seed = (uint64_t)v; break;
        case 'n': if (cli_parse_int("--count", optarg, 1, 1L << 32, &v)) return 2; count = v; break;
        case 'D':
            if (!strcmp(optarg, "f32")) cfg.dtype = SPRUCE_DTYPE_F32;
            else if (!strcmp(optarg, "f16")) cfg.dtype = SPRUCE_DTYPE_F16;
            else if (!strcmp(optarg, "bf16")) cfg.dtype = SPRUCE_DTYPE_BF16;
            else {
                cli_fail("--dtype: expected f32, f16 or bf16, got '%s'", optarg);
                return 2;
            }
            break;
        case 'F':
            if (!strcmp(optarg, "gemma3"))
                optarg = "gemma3_text";   /* the text model's model_type */
            if (!spruce_family_find(optarg)) {
                cli_fail("--family: expected one of %s, got '%s'", spruce_family_supported(),
                         optarg);
                return 2;
            }
            fam.model_type = optarg;
            break;
        case 'd': if (cli_parse_int("--head-dim", optarg, 2, 1 << 16, &v)) return 2; fam.head_dim = (int)v; break;
        case 'r':
            if (!strcmp(optarg, "linear")) fam.rope = SPRUCE_ROPE_LINEAR;
            else if (!strcmp(optarg, "dynamic")) fam.rope = SPRUCE_ROPE_DYNAMIC;
            else if (!strcmp(optarg, "yarn")) fam.rope = SPRUCE_ROPE_YARN;
            else if (!strcmp(optarg, "llama3")) fam.rope = SPRUCE_ROPE_LLAMA3;
            else if (!strcmp(optarg, "longrope")) fam.rope = SPRUCE_ROPE_LONGROPE;
            else {
                cli_fail("--rope-scaling: expected linear, dynamic, yarn, llama3 or longrope, got '%s'",
                         optarg);
                return 2;
            }
            break;
        case 'R': if (cli_parse_float("--rope-factor", optarg, 1.0, 1e6, &fv)) return 2; fam.rope_factor = fv; break;
        case 'X': if (cli_parse_int("--experts", optarg, 1, SPRUCE_MAX_EXPERTS, &v)) return 2; fam.experts = (int)v; break;
        case 'k': if (cli_parse_int("--experts-per-tok", optarg, 1, SPRUCE_MAX_EXPERTS, &v)) return 2; fam.experts_per_tok = (int)v; break;
        case 'W': if (cli_parse_int("--expert-intermediate", optarg, 1, SPRUCE_MAX_INTERMEDIATE, &v)) return 2; fam.expert_intermediate = (int)v; break;
        case 'f': force = 1; break;
        case 'c': calib = optarg; break;
        case 'e': eval = optarg; break;
        default:
            cli_fail("synth: unknown or incomplete option '%s' (try 'spruce synth --help')", argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        cli_fail("synth: expected one output directory, got %d arguments (try 'spruce synth --help')",
                 argc - optind);
        return 2;
    }
    out = argv[optind];
    if ((!fam.head_dim && (cfg.hidden % cfg.heads || (cfg.hidden / cfg.heads) % 2)) ||
        cfg.heads % cfg.kv_heads) {
        cli_fail("synth: --hidden %d, --heads %d, --kv-heads %d: need hidden = heads x an even head "
                 "size (or --head-dim) and heads a multiple of kv-heads", cfg.hidden, cfg.heads,
                 cfg.kv_heads);
        return 2;
    }
    if (fam.head_dim % 2) {
        cli_fail("synth: --head-dim %d must be even for rotary embeddings", fam.head_dim);
        return 2;
    }
    t0 = spruce_clock_now();
    fprintf(stderr, "spruce synth: %s, %lld parameters, %d layers, hidden %d, writing %s\n",
            fam.model_type, (long long)spruce_synth_family_nparams(&cfg, &fam), cfg.layers,
            cfg.hidden, out);
    cli_signals_install(); /* a signal stops the write and removes OUT.tmp-<pid> */
    cli_clean_stale("synth", out);
    if ((rc = spruce_synth_write_family(out, &cfg, &fam, force))) {
        if (rc != SPRUCE_ECANCELED || !cli_interrupted()) {
            cli_error(rc, "synth %s", out);
            return 1;
        }
    }
    if (!rc)
        fprintf(stderr, "spruce synth: wrote %s in %.1f s\n", out, spruce_clock_now() - t0);
    /* token streams: seeds derived from --seed, different for calib and eval */
    if (!cli_interrupted() && calib &&
        write_tokens(calib, (uint32_t)cfg.vocab, count, cfg.seed * 2 + 0x5eed0001ull))
        return 1;
    if (!cli_interrupted() && eval &&
        write_tokens(eval, (uint32_t)cfg.vocab, count, cfg.seed * 2 + 0x5eed0002ull))
        return 1;
    cli_signals_reraise("synth");
    return 0;
}
