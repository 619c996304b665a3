/* fuzz_safetensors.c: libFuzzer target for the safetensors header parser.
 *
 * Each input is a whole safetensors file in memory.  The parser must either
 * reject it with a SPRUCE_E* code and a detail message, or accept it with
 * every tensor's byte range inside the data section, sized numel x itemsize
 * for the known dtypes, and no two ranges overlapping.  Any crash, leak or
 * sanitizer report, or a broken invariant (abort), is a finding.
 * Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spruce__st_header h;
    int rc = spruce__safetensors_parse(data, size, "fuzz", &h), i, j;
    if (rc) {
        if (rc >= 0 || spruce_errdetail()[0] == '\0')
            abort(); /* a failure must be a negative code with a message */
        return 0;
    }
    if (h.data_start != 8 + h.header_len || h.data_start + h.data_size != size)
        abort();
    for (i = 0; i < h.n; i++) {
        const spruce__st_entry *e = &h.e[i];
        spruce_dtype dt;
        size_t item = spruce__dtype_itemsize(e->dtype_name, &dt);
        uint64_t numel = 1;
        if (e->begin > e->end || e->end > h.data_size || e->ndim < 0 || e->ndim > SPRUCE_MAX_DIMS)
            abort();
        for (j = 0; j < e->ndim; j++)
            numel *= (uint64_t)e->shape[j];
        if (item && numel * item != e->end - e->begin)
            abort();
        /* touch the first and last byte: ASan reports a range outside the input */
        if (e->end > e->begin) {
            volatile uint8_t first = data[h.data_start + e->begin], last = data[h.data_start + e->end - 1];
            (void)first;
            (void)last;
        }
        for (j = 0; j < i; j++)
            if (e->end > e->begin && h.e[j].end > h.e[j].begin && e->begin < h.e[j].end &&
                h.e[j].begin < e->end)
                abort();
    }
    spruce__st_header_clear(&h);
    return 0;
}
