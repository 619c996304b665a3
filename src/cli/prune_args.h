/* prune_args.h: the pruning options `spruce prune` and `spruce bench prune`
 * share: --sparsity S | --pattern N:M, --method, --blocksize, --damp,
 * --threads, --wbits, --groupsize, --sym.  A command puts PRUNE_ARGS_OPTIONS in its getopt_long table and
 * hands every option it does not know itself to prune_args_option. */
#ifndef SPRUCE_CLI_PRUNE_ARGS_H
#define SPRUCE_CLI_PRUNE_ARGS_H

#include <getopt.h>

#include "spruce_prune.h"

/* getopt_long codes: above the commands' own (which start at 256). */
enum {
    PRUNE_ARG_SPARSITY = 0x1000,
    PRUNE_ARG_PATTERN,
    PRUNE_ARG_METHOD,
    PRUNE_ARG_BLOCKSIZE,
    PRUNE_ARG_DAMP,
    PRUNE_ARG_THREADS,
    PRUNE_ARG_WBITS,
    PRUNE_ARG_GROUPSIZE,
    PRUNE_ARG_SYM,
};

#define PRUNE_ARGS_OPTIONS                                                                   \
    {"sparsity", required_argument, NULL, PRUNE_ARG_SPARSITY},                               \
    {"pattern", required_argument, NULL, PRUNE_ARG_PATTERN},                                 \
    {"method", required_argument, NULL, PRUNE_ARG_METHOD},                                   \
    {"blocksize", required_argument, NULL, PRUNE_ARG_BLOCKSIZE},                             \
    {"damp", required_argument, NULL, PRUNE_ARG_DAMP},                                       \
    {"threads", required_argument, NULL, PRUNE_ARG_THREADS},                                 \
    {"wbits", required_argument, NULL, PRUNE_ARG_WBITS},                                     \
    {"groupsize", required_argument, NULL, PRUNE_ARG_GROUPSIZE},                             \
    {"sym", no_argument, NULL, PRUNE_ARG_SYM}

#define PRUNE_ARGS_ALL (-1) /* --method all: every method, one after the other */

typedef struct {
    const char *cmd;     /* "prune", "bench prune": the messages' prefix */
    int allow_all;       /* --method all is accepted */
    double sparsity;     /* --sparsity (default 0.5) */
    int have_sparsity;   /* --sparsity was given */
    int n, m;            /* --pattern N:M; 0, 0 when not given */
    int method;          /* a spruce_method, or PRUNE_ARGS_ALL */
    long blocksize;      /* default 128 */
    double damp;         /* default 0.01 */
    long threads;        /* 0: all cores */
    long wbits;          /* --wbits B (2..8); 0: no quantization */
    long groupsize;      /* --groupsize G; 0: one grid per row */
    int sym;             /* --sym */
} prune_args;

/* The help lines of --wbits, --groupsize and --sym (both commands print them). */
#define PRUNE_ARGS_QUANT_HELP                                                                \
    "  --wbits B            also quantize the kept weights to B bits (2 to 8), a min-max\n"    \
    "                       grid per row found before pruning; SparseGPT rounds in its\n"     \
    "                       sweep and spreads the rounding error (GPTQ when there is no\n"    \
    "                       sparsity: --sparsity 0); wanda and magnitude round the kept\n"    \
    "                       weights without error feedback\n"                                 \
    "  --groupsize G        with --wbits: a grid per row and per G columns (G divides the\n"  \
    "                       columns, is a multiple of M of --pattern, and divides\n"          \
    "                       --blocksize or is a multiple of it)\n"                            \
    "  --sym                with --wbits: a symmetric grid (default asymmetric)\n"

/* The defaults; method is the default --method. */
void prune_args_init(prune_args *a, const char *cmd, int method, int allow_all);

/* Option c with argument arg: 1 when it was one of these (now in a), 0 when it
 * is not, -1 after a message saying what was wrong. */
int prune_args_option(prune_args *a, int c, const char *arg);

/* After the options: --sparsity and --pattern not both, and, when
 * need_target, one of them.  0, or -1 after a message. */
int prune_args_check(const prune_args *a, int need_target);

/* Into o: the target (sparsity, or N:M with sparsity 0), the method (unless
 * PRUNE_ARGS_ALL), blocksize, damp and threads. */
void prune_args_apply(const prune_args *a, spruce_prune_opts *o);

#endif
