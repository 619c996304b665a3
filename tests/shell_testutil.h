/* shell_testutil.h: run a shell command made with printf's format and get
 * its exit status (the synth and MPI command-line tests share it). */
#ifndef SPRUCE_SHELL_TESTUTIL_H
#define SPRUCE_SHELL_TESTUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* The exit status of `sh -c CMD` (-1: killed by a signal); CMD is at most
 * 8191 bytes. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static inline int run_status(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    int st;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
