/* cli_signal.c: SIGINT, SIGTERM and SIGHUP during a command that writes.
 *
 * The handler only records the signal (async-signal-safe); the command checks
 * cli_interrupted() at its check points (after each pruned layer, after each
 * exported or applied mask, before publishing), aborts through its ordinary
 * error path, which removes its temporary files, and then calls
 * cli_signals_reraise(), which raises the signal again with the default
 * disposition so that the exit status says which signal ended it.  A second
 * signal of the same kind takes the default action at once (SA_RESETHAND):
 * what it leaves behind is removed by the next run with the same output. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "spruce_ckpt.h"

static volatile sig_atomic_t caught;
static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};

static void on_signal(int sig)
{
    if (!caught)
        caught = sig;
}

void cli_signals_install(void)
{
    struct sigaction sa;
    size_t i;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        /* a signal ignored by whoever started us (nohup) stays ignored */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
    spruce_set_cancel_flag(&caught); /* long library steps stop at their next piece */
}

int cli_interrupted(void) { return caught; }

void cli_signals_reraise(const char *cmd)
{
    sigset_t set;
    int sig = caught;
    if (!sig)
        return;
    fprintf(stderr, "spruce: %s: stopped by %s; no temporary file is left\n", cmd,
            sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP");
    fflush(stderr);
    signal(sig, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
}

static void note_stale(void *ctx, const char *path, const char *what)
{
    const char **p = ctx;
    if (!strcmp(what, "restored as"))
        fprintf(stderr, "%s: %s left by a run that was killed: restored as %s\n", p[0], path, p[1]);
    else
        fprintf(stderr, "%s: %s left by a run that was killed: removed\n", p[0], path);
}

void cli_clean_stale(const char *cmd, const char *path)
{
    const char *ctx[2];
    if (!path)
        return;
    ctx[0] = cmd;
    ctx[1] = path;
    spruce_output_clean_stale(path, note_stale, (void *)ctx);
}

int cli_check_output(const char *cmd, const char *out, int is_dir, const char *out_what,
                     const char *in, const char *in_what)
{
    int rc = spruce_output_check(out, is_dir, out_what, in, in_what);
    if (rc)
        cli_error(rc, "%s", cmd);
    return rc ? -1 : 0;
}
