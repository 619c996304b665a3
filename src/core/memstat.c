/* memstat.c: peak resident memory (getrusage) and its anonymous and mapped
 * parts (/proc/self/status, Linux only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "spruce_error.h"
#include "spruce_memstat.h"

/* ru_maxrss is in kilobytes on Linux and the BSDs, in bytes on macOS */
#ifdef __APPLE__
#define MAXRSS_UNIT 1.0
#else
#define MAXRSS_UNIT 1024.0
#endif

void spruce_memstat_init(spruce_memstat *max)
{
    if (max)
        max->peak_rss = max->rss_anon = max->rss_file = -1;
}

/* the value in kB of the line "key:  N kB" of text, in bytes; -1 if absent */
static double status_field(const char *text, const char *key)
{
    size_t n = strlen(key);
    const char *p = text;
    while (p && *p) {
        if (!strncmp(p, key, n) && p[n] == ':') {
            char *end;
            double v = strtod(p + n + 1, &end);
            return end == p + n + 1 || v < 0 ? -1 : v * 1024.0;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

void spruce_memstat_parse_status(const char *text, spruce_memstat *m)
{
    if (!m)
        return;
    m->rss_anon = text ? status_field(text, "RssAnon") : -1;
    m->rss_file = text ? status_field(text, "RssFile") : -1;
}

int spruce_memstat_read(spruce_memstat *m)
{
    struct rusage ru;
    char buf[8192];
    size_t got = 0;
    FILE *f;
    if (!m)
        return spruce__seterr(SPRUCE_EINVAL, "memstat: NULL argument");
    spruce_memstat_init(m);
    if (!getrusage(RUSAGE_SELF, &ru))
        m->peak_rss = (double)ru.ru_maxrss * MAXRSS_UNIT;
    f = fopen("/proc/self/status", "r");
    if (f) {
        got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[got] = '\0';
    spruce_memstat_parse_status(got ? buf : NULL, m);
    if (m->peak_rss < 0 && m->rss_anon < 0)
        return spruce__seterr(SPRUCE_EIO, "memstat: neither getrusage nor /proc/self/status answered");
    return 0;
}

void spruce_memstat_sample(spruce_memstat *max)
{
    spruce_memstat now;
    if (!max || spruce_memstat_read(&now))
        return;
    if (now.peak_rss > max->peak_rss)
        max->peak_rss = now.peak_rss;
    if (now.rss_anon > max->rss_anon)
        max->rss_anon = now.rss_anon;
    if (now.rss_file > max->rss_file)
        max->rss_file = now.rss_file;
}
