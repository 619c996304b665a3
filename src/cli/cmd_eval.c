/* cmd_eval.c: placeholder until the command lands. */
#include "cli.h"

int spruce_cmd_eval(int argc, char **argv)
{
    (void)argc;
    cli_fail("%s: not available in this build yet", argv[0]);
    return 2;
}
