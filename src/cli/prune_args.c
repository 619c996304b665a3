/* prune_args.c: the pruning options `spruce prune` and `spruce bench prune`
 * share (prune_args.h). */
#include <string.h>

#include "cli.h"
#include "prune_args.h"

void prune_args_init(prune_args *a, const char *cmd, int method, int allow_all)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->allow_all = allow_all;
    a->sparsity = 0.5;
    a->method = method;
    a->blocksize = 128;
    a->damp = 0.01;
}

static int parse_method(prune_args *a, const char *arg)
{
    spruce_method m;
    if (a->allow_all && !strcmp(arg, "all")) {
        a->method = PRUNE_ARGS_ALL;
        return 1;
    }
    if (spruce_method_parse(arg, &m)) {
        cli_fail("%s: --method: expected sparsegpt, wanda%s magnitude%s, got '%s'", a->cmd,
                 a->allow_all ? "," : " or", a->allow_all ? " or all" : "", arg);
        return -1;
    }
    a->method = (int)m;
    return 1;
}

int prune_args_option(prune_args *a, int c, const char *arg)
{
    int ok;
    switch (c) {
    case PRUNE_ARG_SPARSITY:
        ok = !cli_parse_float("--sparsity", arg, 0.0, 0.999999, &a->sparsity);
        a->have_sparsity = 1;
        break;
    case PRUNE_ARG_PATTERN: ok = !cli_parse_pattern("--pattern", arg, &a->n, &a->m); break;
    case PRUNE_ARG_METHOD: return parse_method(a, arg);
    case PRUNE_ARG_BLOCKSIZE:
        ok = !cli_parse_int("--blocksize", arg, 1, 1 << 16, &a->blocksize);
        break;
    case PRUNE_ARG_DAMP: ok = !cli_parse_float("--damp", arg, 0.0, 1e6, &a->damp); break;
    case PRUNE_ARG_THREADS: ok = !cli_parse_int("--threads", arg, 1, 1024, &a->threads); break;
    case PRUNE_ARG_WBITS: ok = !cli_parse_int("--wbits", arg, 2, 8, &a->wbits); break;
    case PRUNE_ARG_GROUPSIZE:
        ok = !cli_parse_int("--groupsize", arg, 1, 1 << 24, &a->groupsize);
        break;
    case PRUNE_ARG_SYM: a->sym = 1; return 1;
    default: return 0;
    }
    return ok ? 1 : -1;
}

int prune_args_check(const prune_args *a, int need_target)
{
    if (need_target && a->have_sparsity == (a->m != 0)) {
        cli_fail("%s: give exactly one of --sparsity S and --pattern N:M", a->cmd);
        return -1;
    }
    if (a->have_sparsity && a->m) {
        cli_fail("%s: give --sparsity or --pattern, not both", a->cmd);
        return -1;
    }
    if (!a->wbits && (a->groupsize || a->sym)) {
        cli_fail("%s: %s needs --wbits B", a->cmd, a->groupsize ? "--groupsize" : "--sym");
        return -1;
    }
    if (a->groupsize && a->m && a->groupsize % a->m) {
        cli_fail("%s: --groupsize %ld must be a multiple of M = %d of --pattern %d:%d", a->cmd,
                 a->groupsize, a->m, a->n, a->m);
        return -1;
    }
    return 0;
}

void prune_args_apply(const prune_args *a, spruce_prune_opts *o)
{
    o->sparsity = a->m ? 0.0f : (float)a->sparsity;
    o->prune_n = a->n;
    o->prune_m = a->m;
    if (a->method != PRUNE_ARGS_ALL)
        o->method = (spruce_method)a->method;
    o->blocksize = (int)a->blocksize;
    o->damp = (float)a->damp;
    o->threads = (int)a->threads;
    o->wbits = (int)a->wbits;
    o->groupsize = (int)a->groupsize;
    o->sym = a->sym;
}
