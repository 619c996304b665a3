/* cmd_bench.c: `spruce bench` (sparse kernels against dense) and `spruce bench prune`. */
#include <string.h>

#include "cli.h"

int spruce_cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "prune"))
        return spruce_cmd_bench_prune(argc - 1, argv + 1);
    cli_fail("bench: kernel benchmarks are not available in this build yet");
    return 2;
}
