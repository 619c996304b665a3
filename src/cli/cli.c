/* cli.c: helpers shared by the subcommands. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "spruce_dist.h"
#include "spruce_error.h"
#include "spruce_tokens.h"

int cli_verbose = 0;

/* The last message cli_error or cli_fail printed: what cli_agree tells the
 * other ranks. */
static char last_msg[1024];

void cli_error(int code, const char *fmt, ...)
{
    va_list ap;
    const char *detail = spruce_errdetail();
    size_t n;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    n = strlen(last_msg);
    snprintf(last_msg + n, sizeof last_msg - n, ": %s%s%s", spruce_strerror(code),
             detail && *detail ? ": " : "", detail && *detail ? detail : "");
    fprintf(stderr, "spruce: %s\n", last_msg);
}

void cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "spruce: %s\n", last_msg);
}

int cli_agree(int failed)
{
    char msg[sizeof last_msg];
    snprintf(msg, sizeof msg, "%s", failed ? last_msg : "");
    if (!spruce_dist_agree_msg(failed ? 1 : 0, msg, sizeof msg))
        return 0;
    if (!failed) /* another rank's failure: say it here too */
        fprintf(stderr, "spruce: %s\n", msg);
    return 1;
}

int cli_rank0(void)
{
    return spruce_dist_rank() == 0;
}

int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end != '\0' || errno || v < lo || v > hi) {
        cli_fail("%s: expected a whole number in [%ld, %ld], got '%s'", opt, lo, hi,
                 s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_groupsize(const char *cmd, const char *s, long *out)
{
    long v;
    if (cli_parse_int("--groupsize", s, 32, 256, &v) < 0)
        return -1;
    if (v % 32) {
        cli_fail("%s: --groupsize: expected a multiple of 32 from 32 to 256, got %ld", cmd, v);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = s ? strtod(s, &end) : 0;
    if (!s || end == s || *end != '\0' || errno || !isfinite(v) || v < lo || v > hi) {
        cli_fail("%s: expected a number in [%g, %g], got '%s'", opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_pattern(const char *opt, const char *s, int *n, int *m)
{
    int a, b, len = 0;
    if (!s || sscanf(s, "%d:%d%n", &a, &b, &len) != 2 || s[len] != '\0' || a <= 0 || b <= 0 ||
        a >= b || b > 256) {
        cli_fail("%s: expected N:M with 0 < N < M <= 256 (e.g. 2:4), got '%s'", opt, s ? s : "");
        return -1;
    }
    *n = a;
    *m = b;
    return 0;
}

void cli_length_warning(const char *cmd, const spruce_config *cfg, long T, const char *dir)
{
    char note[512];
    if (spruce_config_length_warning(cfg, T, note, sizeof note))
        fprintf(stderr, "spruce: %s: warning: %s: %s\n", cmd, dir, note);
}

int cli_model_seqlen(const char *cmd, const spruce_config *cfg, const char *dir, long *seqlen)
{
    if (!*seqlen)
        *seqlen = cfg->max_position_embeddings < 2048 ? cfg->max_position_embeddings : 2048;
    cli_length_warning(cmd, cfg, *seqlen, dir);
    return 0;
}

int cli_data_open(const char *cmd, const char *opt, const char *path, const char *fmt_name,
                  const char *dir, spruce_data_format *f, spruce_tokenizer **tok)
{
    char *tj;
    int rc;
    *tok = NULL;
    if (fmt_name) {
        if (spruce_data_format_parse(fmt_name, f) || *f == SPRUCE_DATA_AUTO) {
            cli_fail("%s: %s-format: expected ids, u16, u32, text or jsonl, got '%s'", cmd, opt,
                     fmt_name);
            return -1;
        }
    } else if ((rc = spruce_data_detect(path, f))) {
        cli_error(rc, "%s: %s", cmd, opt);
        return -1;
    }
    fprintf(stderr, "%s: reading %s as %s%s\n", cmd, path, spruce_data_format_name(*f),
            fmt_name ? " (as asked)" : "");
    if (!spruce_data_needs_tokenizer(*f))
        return 0;
    if (!(tj = malloc(strlen(dir) + 32)))
        return -1;
    sprintf(tj, "%s/tokenizer.json", dir);
    if (access(tj, F_OK) != 0) {
        cli_fail("%s: %s is read as %s, which needs the model's tokenizer, but %s has no "
                 "tokenizer.json (give token ids, or %s-format ids|u16|u32)", cmd, path,
                 spruce_data_format_name(*f), dir, opt);
        free(tj);
        return -1;
    }
    rc = spruce_tokenizer_load(tj, tok);
    free(tj);
    if (rc) {
        cli_error(rc, "%s: tokenizer", cmd);
        return -1;
    }
    return 0;
}

int cli_load_windows(const char *cmd, const char *path, const spruce_config *cfg, long seqlen,
                     uint32_t **ids, size_t *n)
{
    int rc;
    *ids = NULL;
    *n = 0;
    if ((rc = spruce_tokens_load(path, ids, n)) ||
        (rc = spruce_tokens_check(*ids, *n, (uint32_t)cfg->vocab_size, path))) {
        cli_error(rc, "%s: %s", cmd, path);
        return -1;
    }
    if (*n < (size_t)seqlen) {
        cli_fail("%s: %s holds %zu tokens, shorter than one window of %ld", cmd, path, *n,
                 seqlen);
        return -1;
    }
    return 0;
}

json_t *cli_json_real(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

void cli_set_threads(long threads)
{
    if (threads <= 0)
        return;
#ifdef _OPENMP
    omp_set_num_threads((int)threads);
#endif
    openblas_set_num_threads((int)threads);
}
