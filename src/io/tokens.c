/* tokens.c: token-id files (.u16, .u32 little-endian; .txt decimal). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spruce_files.h"
#include "spruce_tokens.h"
#include "tokens_internal.h"

typedef enum { FMT_U16, FMT_U32, FMT_TXT, FMT_UNKNOWN } fmt;

static fmt format_of(const char *path)
{
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        return FMT_UNKNOWN;
    if (!strcmp(dot, ".u16"))
        return FMT_U16;
    if (!strcmp(dot, ".u32"))
        return FMT_U32;
    if (!strcmp(dot, ".txt"))
        return FMT_TXT;
    return FMT_UNKNOWN;
}

static int read_all(const char *path, unsigned char **buf, size_t *len)
{
    FILE *f;
    size_t cap = 1 << 16, n = 0, r;
    unsigned char *b = NULL, *nb;
    int rc;
    if ((rc = spruce__fopen_regular(path, &f)))
        return rc; /* a directory or a FIFO is refused before any read */
    for (;;) {
        if (!(nb = realloc(b, cap))) {
            free(b);
            fclose(f);
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading the file", path);
        }
        b = nb;
        r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        cap *= 2;
    }
    if (ferror(f)) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: read error: %s", path, strerror(errno));
        free(b);
        fclose(f);
        return rc;
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
}

static int parse_txt(const char *path, const unsigned char *b, size_t len, uint32_t **ids, size_t *n)
{
    size_t i = 0, cnt = 0, cap = 1024, line = 1;
    uint32_t *out = malloc(cap * sizeof *out), *no;
    if (!out)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    while (i < len) {
        uint64_t v = 0;
        size_t start;
        if (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n' || b[i] == '\f' || b[i] == '\v') {
            line += b[i] == '\n';
            i++;
            continue;
        }
        start = i;
        while (i < len && b[i] >= '0' && b[i] <= '9') {
            v = v * 10 + (uint64_t)(b[i] - '0');
            if (v > UINT32_MAX)
                break;
            i++;
        }
        if (i == start || (i < len && !strchr(" \t\r\n\f\v", b[i])) || v > UINT32_MAX) {
            size_t e = start;
            while (e < len && e - start < 32 && !strchr(" \t\r\n\f\v", b[e]) && b[e])
                e++;
            free(out);
            if (v > UINT32_MAX)
                return spruce__seterr(SPRUCE_EFORMAT, "%s: line %zu: expected an id below 2^32, found '%.*s'",
                                      path, line, (int)(e - start), (const char *)b + start);
            return spruce__seterr(SPRUCE_EFORMAT, "%s: line %zu: expected a decimal token id, found '%.*s'",
                                  path, line, (int)(e - start), (const char *)b + start);
        }
        if (cnt == cap) {
            cap *= 2;
            if (!(no = realloc(out, cap * sizeof *out))) {
                free(out);
                return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
            }
            out = no;
        }
        out[cnt++] = (uint32_t)v;
    }
    if (cnt == 0) {
        free(out);
        return spruce__seterr(SPRUCE_EFORMAT, "%s: expected token ids, found none", path);
    }
    *ids = out;
    *n = cnt;
    return 0;
}

int spruce_tokens_load(const char *path, uint32_t **ids, size_t *n)
{
    unsigned char *b = NULL;
    size_t len = 0;
    int rc;

    if (!path || !ids || !n)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokens_load: NULL argument");
    *ids = NULL;
    *n = 0;
    if (format_of(path) == FMT_UNKNOWN)
        return spruce__seterr(SPRUCE_EINVAL, "%s: expected a token file ending in .u16, .u32 or .txt",
                              path);
    if ((rc = read_all(path, &b, &len)))
        return rc;
    rc = spruce__tokens_parse(path, b, len, ids, n);
    free(b);
    return rc;
}

int spruce__tokens_parse(const char *path, const unsigned char *b, size_t len, uint32_t **ids,
                         size_t *n)
{
    fmt f = format_of(path);
    return spruce__tokens_parse_as(path, f == FMT_U16 ? SPRUCE__TOKENS_U16
                                         : f == FMT_U32 ? SPRUCE__TOKENS_U32
                                         : f == FMT_TXT ? SPRUCE__TOKENS_TXT : -1,
                                   b, len, ids, n);
}

int spruce__tokens_parse_as(const char *path, int kind, const unsigned char *b, size_t len,
                            uint32_t **ids, size_t *n)
{
    size_t i, w;
    uint32_t *out;
    fmt f = kind == SPRUCE__TOKENS_U16 ? FMT_U16 : kind == SPRUCE__TOKENS_U32 ? FMT_U32
            : kind == SPRUCE__TOKENS_TXT ? FMT_TXT : FMT_UNKNOWN;

    *ids = NULL;
    *n = 0;
    if (f == FMT_UNKNOWN)
        return spruce__seterr(SPRUCE_EINVAL, "%s: expected a token file ending in .u16, .u32 or .txt",
                              path);
    if (f == FMT_TXT)
        return parse_txt(path, b, len, ids, n);
    w = f == FMT_U16 ? 2 : 4;
    if (len == 0 || len % w) {
        if (len == 0)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: expected token ids, found an empty file", path);
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: expected a whole number of %zu-byte ids, found %zu bytes", path, w, len);
    }
    if (!(out = malloc(len / w * sizeof *out)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory for %zu ids", path, len / w);
    for (i = 0; i < len / w; i++) {
        const unsigned char *p = b + i * w;
        out[i] = w == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                        : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    *ids = out;
    *n = len / w;
    return 0;
}

int spruce_tokens_check(const uint32_t *ids, size_t n, uint32_t vocab, const char *path)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (ids[i] >= vocab)
            return spruce__seterr(SPRUCE_EINVAL,
                                  "%s: token %zu: expected an id below the vocabulary size %u, found %u",
                                  path ? path : "tokens", i, vocab, ids[i]);
    return 0;
}

int spruce_tokens_save(const char *path, const uint32_t *ids, size_t n)
{
    fmt f;
    char *tmp = NULL;
    FILE *fp = NULL;
    size_t i;
    int rc = 0;

    if (!path || (!ids && n))
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tokens_save: NULL argument");
    f = format_of(path);
    if (f == FMT_UNKNOWN)
        return spruce__seterr(SPRUCE_EINVAL, "%s: expected a token file ending in .u16, .u32 or .txt",
                              path);
    if (f == FMT_U16)
        for (i = 0; i < n; i++)
            if (ids[i] > 65535)
                return spruce__seterr(SPRUCE_EINVAL, "%s: token %zu: expected an id below 65536 for .u16, found %u",
                                      path, i, ids[i]);
    if (!(tmp = malloc(strlen(path) + 32)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    sprintf(tmp, "%s.tmp-%ld", path, (long)getpid());
    if (!(fp = fopen(tmp, "wb"))) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    for (i = 0; i < n; i++) {
        unsigned char b[4] = {(unsigned char)ids[i], (unsigned char)(ids[i] >> 8),
                              (unsigned char)(ids[i] >> 16), (unsigned char)(ids[i] >> 24)};
        if (f == FMT_TXT)
            fprintf(fp, "%u%c", ids[i], (i + 1) % 16 == 0 || i + 1 == n ? '\n' : ' ');
        else
            fwrite(b, 1, f == FMT_U16 ? 2 : 4, fp);
    }
    if (fflush(fp) || ferror(fp) || fsync(fileno(fp))) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: write error: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(fp)) {
        fp = NULL;
        rc = spruce__seterr(spruce__errno_code(errno), "%s: write error: %s", tmp, strerror(errno));
        goto done;
    }
    fp = NULL;
    if (rename(tmp, path)) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot rename into place: %s", path, strerror(errno));
        goto done;
    }
done:
    if (fp)
        fclose(fp);
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* splitmix64: a small, well-mixed generator for reproducible ids. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void spruce_tokens_random(uint32_t *ids, size_t n, uint32_t vocab, uint64_t seed)
{
    size_t i;
    uint64_t s = seed;
    for (i = 0; i < n; i++) /* multiply-shift: unbiased enough for 32-bit vocabularies */
        ids[i] = vocab ? (uint32_t)(((splitmix(&s) >> 32) * (uint64_t)vocab) >> 32) : 0;
}
