/* h5chunkindex.c: checking a chunked mask dataset's chunk index (version 1
 * B-tree of raw data chunks) before HDF5 reads it.
 *
 * HDF5 1.10 allocates the size a chunk record claims before it reads the
 * chunk, so a damaged record (a size of gigabytes in a 64 KB file) makes it
 * allocate that much.  The reader walks the tree itself first and accepts
 * only records HDF5 can read within the file's own size and the dataset's
 * declared shape.  The layout is the HDF5 File Format Specification's,
 * version 2, section III.A.2 (version 1 B-trees, node type 1).
 *
 * A node: "TREE", type (1), level, entries used (2 bytes), left and right
 * sibling addresses, then keys and children interleaved, key[0] child[0]
 * ... child[n-1] key[n].  A key of a chunk tree is the chunk's stored size
 * (4 bytes), its filter mask (4 bytes) and its offset in each of the rank + 1
 * dimensions (8 bytes each, the last always 0).  HDF5 reads the whole node
 * as sized for 2K entries, K being the superblock's indexed-storage K (32 in
 * a version 0 superblock). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

#define MAX_LEVEL 16 /* 64 entries a node: 16 levels index far more chunks than any mask has */
#define UNDEF UINT64_MAX

typedef struct {
    int fd;
    uint64_t fsize;
    unsigned two_k;                    /* entries a node can hold */
    size_t node_bytes;
    uint64_t rows, cols, crows, ccols; /* the dataset's and one chunk's shape */
    unsigned nfilters;
    uint64_t nchunks, expected;        /* chunk records seen, and how many the shape has */
    uint64_t last;                     /* the previous chunk's linear index + 1 (0: none yet) */
    const char *why;
} walk;

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = v << 8 | p[n];
    return v;
}

/* The indexed-storage K: in a version 1 superblock, else HDF5's default 32. */
static int chunk_k(int fd, unsigned *k)
{
    uint8_t sb[28];
    if (pread(fd, sb, sizeof sb, 0) != (ssize_t)sizeof sb)
        return -1;
    *k = sb[8] == 1 ? (unsigned)le(sb + 24, 2) : 32;
    return *k >= 1 && *k <= 1024 ? 0 : -1;
}

/* The stored size a filtered chunk of n bytes can have: deflate expands
 * incompressible data by at most 5 bytes per 16 KiB block plus its header
 * (zlib's compressBound), and Fletcher-32 adds 4 bytes. */
static uint64_t stored_bound(uint64_t n) { return n + n / 1024 + 64; }

/* One leaf record: the chunk lies inside the file, its size is one a chunk
 * of the declared shape can have, its filter mask names only filters the
 * pipeline holds, its offset is a chunk of the dataset, after the last one. */
static int check_record(walk *w, const uint8_t *key, uint64_t addr)
{
    uint64_t size = le(key, 4), mask = le(key + 4, 4);
    uint64_t r = le(key + 8, 8), c = le(key + 16, 8), e = le(key + 24, 8), idx;
    if (size == 0 || addr == UNDEF || addr < 96 || addr > w->fsize || size > w->fsize - addr) {
        w->why = "a chunk record's address or size lies outside the file";
        return -1;
    }
    if (size > stored_bound(w->crows * w->ccols)) {
        w->why = "a chunk record's size is larger than a chunk of the declared shape can be stored";
        return -1;
    }
    if (mask != 0) {
        /* a skipped deflate leaves a stored chunk HDF5 would copy a whole
         * chunk's size out of; the writer never skips a filter */
        w->why = "a chunk record's filter mask skips filters (not what the writer writes)";
        return -1;
    }
    if (e != 0 || r % w->crows || c % w->ccols || r >= w->rows || c >= w->cols) {
        w->why = "a chunk record's offset is not a chunk of the dataset";
        return -1;
    }
    idx = (r / w->crows) * ((w->cols + w->ccols - 1) / w->ccols) + c / w->ccols;
    if (w->nchunks == w->expected || idx + 1 <= w->last) {
        w->why = "the chunk index lists a chunk twice or out of order";
        return -1;
    }
    w->last = idx + 1;
    w->nchunks++;
    return 0;
}

/* A node at addr, which its parent says is at level want (-1 for the root). */
static int check_node(walk *w, uint64_t addr, int want)
{
    uint8_t *node;
    unsigned level, n, i;
    uint64_t sib[2];
    int rc = -1;
    if (addr < 96 || addr > w->fsize || w->fsize - addr < w->node_bytes) {
        w->why = "a chunk index node lies outside the file";
        return -1;
    }
    if (!(node = malloc(w->node_bytes))) {
        w->why = "out of memory";
        return -1;
    }
    if (pread(w->fd, node, w->node_bytes, (off_t)addr) != (ssize_t)w->node_bytes ||
        memcmp(node, "TREE", 4) || node[4] != 1) {
        w->why = "a chunk index node is damaged (no TREE signature of a chunk tree)";
        goto done;
    }
    level = node[5];
    n = (unsigned)le(node + 6, 2);
    sib[0] = le(node + 8, 8);
    sib[1] = le(node + 16, 8);
    if (level > MAX_LEVEL || (want >= 0 && level != (unsigned)want)) {
        w->why = "a chunk index node has the wrong level";
        goto done;
    }
    if (n == 0 || n > w->two_k) {
        w->why = "a chunk index node uses no entries or more than it holds";
        goto done;
    }
    for (i = 0; i < 2; i++)
        if (sib[i] != UNDEF && (sib[i] < 96 || sib[i] > w->fsize - w->node_bytes)) {
            w->why = "a chunk index node's sibling lies outside the file";
            goto done;
        }
    for (i = 0; i < n; i++) {
        const uint8_t *key = node + 24 + (size_t)i * 40;
        uint64_t child = le(key + 32, 8);
        if (level == 0 ? check_record(w, key, child) < 0
                       : check_node(w, child, (int)level - 1) < 0)
            goto done;
    }
    rc = 0;
done:
    free(node);
    return rc;
}

/* Walk the chunk index of a dataset of shape (rows, cols) stored in chunks
 * of (crows, ccols) one-byte elements through nfilters filters.  Every chunk
 * of the shape must be listed once (the writer writes them all).  0, or -1
 * with *why saying what is wrong. */
int spruce__h5_check_chunk_index(int fd, uint64_t btree, uint64_t rows, uint64_t cols,
                                 uint64_t crows, uint64_t ccols, unsigned nfilters,
                                 const char **why)
{
    walk w;
    struct stat st;
    memset(&w, 0, sizeof w);
    if (fstat(fd, &st) < 0 || chunk_k(fd, &w.two_k) < 0) {
        *why = "the superblock's chunk index parameters cannot be read";
        return -1;
    }
    if (btree == UNDEF) {
        *why = "its chunks were never written";
        return -1;
    }
    w.fd = fd;
    w.fsize = (uint64_t)st.st_size;
    w.two_k *= 2;
    w.node_bytes = 24 + (size_t)w.two_k * 8 + ((size_t)w.two_k + 1) * 32;
    w.rows = rows;
    w.cols = cols;
    w.crows = crows;
    w.ccols = ccols;
    w.nfilters = nfilters;
    w.expected = ((rows + crows - 1) / crows) * ((cols + ccols - 1) / ccols);
    if (check_node(&w, btree, -1) < 0) {
        *why = w.why;
        return -1;
    }
    if (w.nchunks != w.expected) {
        *why = "its chunk index does not list every chunk of the dataset";
        return -1;
    }
    return 0;
}
