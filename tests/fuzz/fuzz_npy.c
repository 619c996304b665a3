/* fuzz_npy.c: libFuzzer target for the .npy reader (src/io/npy.c).
 *
 * Each input is a whole .npy file in memory.  The reader must either reject
 * it with a negative SPRUCE_E* code and a detail message, or return a
 * (rows, cols) float32 array whose bytes are the file's last rows x cols x 4
 * bytes.  Any crash, leak or sanitizer report, or a broken invariant (abort),
 * is a finding.  Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "spruce_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *a = NULL;
    int64_t r = 0, c = 0;
    size_t bytes;
    int rc = spruce__npy_parse("fuzz.npy", data, size, &a, &r, &c);
    if (rc) {
        if (rc >= 0 || spruce_errdetail()[0] == '\0' || a)
            abort(); /* a failure is a negative code with a message and no output */
        return 0;
    }
    if (!a || r <= 0 || c <= 0)
        abort();
    bytes = (size_t)r * (size_t)c * 4;
    if (bytes > size || memcmp(a, data + size - bytes, bytes))
        abort();
    free(a);
    return 0;
}
