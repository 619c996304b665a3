/* fuzz_masks.c: libFuzzer target for the HDF5 mask file reader.
 *
 * Each input is a whole mask file.  HDF5 reads files, so the input is written
 * to one temporary file (the same name every time: the reader closes what it
 * opens with the strong close degree, so nothing of the previous input stays
 * open in the library).  The reader must refuse it with a SPRUCE_E* code and a
 * message, or open it and then read every mask as bytes of 0/1 (or refuse
 * that mask with a message).  Any crash, leak or sanitizer report, or a broken
 * invariant (abort), is a finding.  Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "spruce_masks.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* HDF5 keeps freed blocks on its own free lists and hands them out again,
 * which hides reuse after free from AddressSanitizer and makes the leak
 * checker blame whichever input last touched a list.  Limits of zero return
 * every freed block to the C library at once (what HDF5 suggests for memory
 * checkers), so each finding belongs to the input that caused it. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    H5set_free_list_limits(0, 0, 0, 0, 0, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    spruce_maskreader *r = NULL;
    FILE *f;
    int rc, i;
    if (!path[0])
        snprintf(path, sizeof path, "fuzz-masks-%ld.h5", (long)getpid());
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    rc = spruce_maskreader_open(path, &r);
    if (rc) {
        if (rc >= 0 || r || spruce_errdetail()[0] == '\0')
            abort();
        return 0;
    }
    for (i = 0; i < spruce_maskreader_count(r); i++) {
        const char *name = spruce_maskreader_name_at(r, i);
        spruce_mask_meta meta;
        uint8_t *keep;
        size_t n, k;
        if (spruce_maskreader_meta(r, name, &meta) < 0 || meta.rows <= 0 || meta.cols <= 0)
            abort();
        n = (size_t)meta.rows * (size_t)meta.cols;
        if (!(keep = malloc(n)))
            abort();
        if (spruce_maskreader_read(r, name, keep, NULL) == 0) {
            for (k = 0; k < n; k++)
                if (keep[k] > 1)
                    abort();
        } else if (spruce_errdetail()[0] == '\0') {
            abort();
        }
        free(keep);
    }
    spruce_maskreader_close(r);
    return 0;
}
