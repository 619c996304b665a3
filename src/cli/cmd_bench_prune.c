/* cmd_bench_prune.c: placeholder until the command lands. */
#include "cli.h"

int spruce_cmd_bench_prune(int argc, char **argv)
{
    (void)argc;
    cli_fail("%s: not available in this build yet", argv[0]);
    return 2;
}
