/* read_masks.c: read a spruce mask file from C.
 *
 *   read_masks FILE.h5 [NAME]
 *
 * Lists the file's attributes and masks; with NAME, prints that mask's first
 * rows as '#' (kept) and '.' (pruned).  Build against spruce:
 *   cc read_masks.c $(pkg-config --cflags --libs spruce) */
#include <stdio.h>
#include <stdlib.h>

#include "spruce_masks.h"

int main(int argc, char **argv)
{
    spruce_maskreader *r = NULL;
    spruce_mask_meta meta;
    uint8_t *keep = NULL;
    int64_t i, j;
    int rc, k, status = 1;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s FILE.h5 [NAME]\n", argv[0]);
        return 2;
    }
    if ((rc = spruce_maskreader_open(argv[1], &r)) < 0) {
        fprintf(stderr, "%s: %s\n", spruce_strerror(rc), spruce_errdetail());
        return 1;
    }
    /* Root attributes: how the masks were made. */
    for (k = 0; k < spruce_maskreader_nattrs(r); k++) {
        const spruce_mask_attr *a = spruce_maskreader_attr_at(r, k);
        printf("%-16s %s\n", a->key, a->s);
    }
    /* One line per mask: name, shape, sparsity and pattern attributes. */
    for (k = 0; k < spruce_maskreader_count(r); k++) {
        const char *name = spruce_maskreader_name_at(r, k);
        spruce_maskreader_meta(r, name, &meta);
        printf("%-48s %6lld x %-6lld sparsity %.4f  %s\n", name, (long long)meta.rows,
               (long long)meta.cols, meta.sparsity, meta.pattern);
    }
    if (argc == 3) {
        /* The mask itself: (rows, cols) row-major, 1 = kept. */
        if ((rc = spruce_maskreader_meta(r, argv[2], &meta)) < 0 ||
            !(keep = malloc((size_t)(meta.rows * meta.cols))) ||
            (rc = spruce_maskreader_read(r, argv[2], keep, NULL)) < 0) {
            fprintf(stderr, "%s: %s\n", keep ? spruce_strerror(rc) : "out of memory",
                    keep ? spruce_errdetail() : argv[2]);
            goto done;
        }
        for (i = 0; i < meta.rows && i < 16; i++) {
            for (j = 0; j < meta.cols && j < 64; j++)
                putchar(keep[i * meta.cols + j] ? '#' : '.');
            putchar('\n');
        }
    }
    status = 0;
done:
    free(keep);
    spruce_maskreader_close(r);
    return status;
}
