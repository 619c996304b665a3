/* spruce_memstat.h: the memory the process has used, as the operating system
 * measures it: the peak resident set (getrusage ru_maxrss) and, where Linux's
 * /proc/self/status tells them, the resident anonymous and file-backed
 * (mapped) parts. */
#ifndef SPRUCE_MEMSTAT_H
#define SPRUCE_MEMSTAT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double peak_rss;  /* bytes: the largest resident set so far (ru_maxrss); -1 unknown */
    double rss_anon;  /* bytes resident now, anonymous (RssAnon); -1 unknown */
    double rss_file;  /* bytes resident now, mapped from files (RssFile); -1 unknown */
} spruce_memstat;

/* Fill m with the process's figures now; fields the platform does not give
 * are -1.  Returns 0, or SPRUCE_EIO when neither source answered. */
int spruce_memstat_read(spruce_memstat *m);

/* Parse the RssAnon and RssFile lines ("RssAnon:   1234 kB") of a
 * /proc/<pid>/status text into m (fields left -1 when absent). */
void spruce_memstat_parse_status(const char *text, spruce_memstat *m);

/* Sample now and keep in *max the largest of each field seen so far
 * (initialise *max with spruce_memstat_init).  The anonymous and mapped
 * maxima are those of the samples: a lower bound on their true peaks, which
 * the kernel does not record. */
void spruce_memstat_init(spruce_memstat *max);
void spruce_memstat_sample(spruce_memstat *max);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_MEMSTAT_H */
