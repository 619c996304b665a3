/* main.c: the spruce program: `spruce <command> [options]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"
#include "cli_env.h"
#include "spruce_dist.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"prune", spruce_cmd_prune, "prune a Hugging Face checkpoint (SparseGPT, Wanda, magnitude)"},
    {"eval",  spruce_cmd_eval,  "perplexity of a checkpoint on a token file"},
    {"synth", spruce_cmd_synth, "write a deterministic random LLaMA-shaped checkpoint"},
    {"masks", spruce_cmd_masks, "export, apply, inspect and compare HDF5 mask files"},
    {"bench", spruce_cmd_bench, "benchmark sparse kernels against dense OpenBLAS ('bench prune': the pruner)"},
    {"tokenize", spruce_cmd_tokenize, "text to token ids and back with a model's tokenizer.json"},
    {"run",   spruce_cmd_run,   "generate tokens with a checkpoint on the sparse runtime"},
    {"demo",  spruce_cmd_demo,  "synthesise, prune 2:4, save masks, evaluate and benchmark, end to end"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    size_t i;
    fprintf(f, "usage: spruce [--verbose] <command> [options]\n"
               "       spruce <command> --help\n"
               "       spruce --version\n\n"
               "spruce prunes large language models in one shot and runs them sparse on CPUs.\n\n"
               "commands:\n");
    for (i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-8s %s\n", "help", "this message, or 'help <command>' for one command");
    fprintf(f, "\nenvironment:\n"
               "  SPRUCE_VERBOSE=1    as --verbose\n"
               "  SPRUCE_ISA=I        force the sparse kernels' instruction set: scalar, avx2, avx512\n"
               "  SPRUCE_NO_REEXEC=1  do not run again with OPENBLAS_CORETYPE and OMP_WAIT_POLICY set\n"
               "  SPRUCE_NO_BIND=1    do not bind threads one per CPU (also skipped when OMP_PROC_BIND,\n"
               "                      OMP_PLACES or GOMP_CPU_AFFINITY is set)\n");
}

/* Under mpirun (built --with-mpi) every rank runs the command; prune and eval
 * split their work over the ranks, the other commands run in one process.
 * Only rank 0 prints, unless --verbose. */
static int run_command(const command *cmd, int argc, char **argv)
{
    int rc, status, devnull;
    if ((rc = spruce_dist_init(&argc, &argv))) {
        cli_error(rc, "%s: starting MPI", cmd->name);
        return 1;
    }
    if (spruce_dist_size() > 1 && strcmp(cmd->name, "prune") && strcmp(cmd->name, "eval")) {
        if (spruce_dist_rank() == 0)
            cli_fail("%s runs in one process: start it without mpirun (only prune and eval "
                     "run across ranks)", cmd->name);
        spruce_dist_finalize();
        return 2;
    }
    if (spruce_dist_rank() > 0 && !cli_verbose && (devnull = open("/dev/null", O_WRONLY)) >= 0) {
        /* what the other ranks would print, rank 0 prints (cli_agree) */
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        close(devnull);
    }
    status = cmd->run(argc, argv);
    fflush(NULL);
    spruce_dist_finalize();
    return status;
}

int main(int argc, char **argv)
{
    int a = 1;
    size_t i;
    const char *env = getenv("SPRUCE_VERBOSE");
    if (env && *env && strcmp(env, "0") != 0)
        cli_verbose = 1;
    while (a < argc && argv[a][0] == '-') {
        if (!strcmp(argv[a], "--version") || !strcmp(argv[a], "-V")) {
            printf("spruce %s\n", PACKAGE_VERSION);
            return 0;
        } else if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[a], "--verbose") || !strcmp(argv[a], "-v")) {
            cli_verbose = 1;
            a++;
        } else {
            cli_fail("unknown option '%s' (try 'spruce --help')", argv[a]);
            return 2;
        }
    }
    if (a >= argc) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[a], "help")) {
        if (a + 1 < argc) {
            for (i = 0; i < NCOMMANDS; i++)
                if (!strcmp(argv[a + 1], commands[i].name)) {
                    char *hargv[] = {argv[a + 1], "--help", NULL};
                    return commands[i].run(2, hargv);
                }
            cli_fail("unknown command '%s' (try 'spruce help')", argv[a + 1]);
            return 2;
        }
        usage(stdout);
        return 0;
    }
    for (i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[a], commands[i].name)) {
            /* OpenBLAS and libgomp read their environment once: set it up for
             * every command before any work starts (may run spruce again). */
            cli_tune_environment();
            cli_bind_threads();
            return run_command(&commands[i], argc - a, argv + a);
        }
    cli_fail("unknown command '%s' (try 'spruce help')", argv[a]);
    return 2;
}
