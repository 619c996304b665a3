/* fuzz_tokens.c: libFuzzer target for the token-file parser (src/io/tokens.c).
 *
 * The first input byte chooses the format (.u16, .u32 or .txt by its value
 * mod 3); the rest is the file's content.  The parser must either reject it
 * with a negative SPRUCE_E* code and a detail message, or return at least one
 * id: for .u16 and .u32 exactly len / width ids, each the little-endian value
 * at its offset.  Any crash, leak or sanitizer report, or a broken invariant
 * (abort), is a finding.  Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_error.h"
#include "tokens_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[3] = {"fuzz.u16", "fuzz.u32", "fuzz.txt"};
    uint32_t *ids = NULL;
    size_t n = 0, i, w;
    int f, rc;
    if (size == 0)
        return 0;
    f = data[0] % 3;
    rc = spruce__tokens_parse(names[f], data + 1, size - 1, &ids, &n);
    if (rc) {
        if (rc >= 0 || spruce_errdetail()[0] == '\0' || ids || n)
            abort(); /* a failure is a negative code with a message and no output */
        return 0;
    }
    if (!ids || n == 0)
        abort();
    if (f < 2) {
        w = f == 0 ? 2 : 4;
        if ((size - 1) % w || n != (size - 1) / w)
            abort();
        for (i = 0; i < n; i++) {
            const uint8_t *p = data + 1 + i * w;
            uint32_t v = w == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                                : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                      (uint32_t)p[3] << 24;
            if (ids[i] != v)
                abort();
        }
    } else if (n > (size - 1 + 1) / 2) {
        abort(); /* each decimal id takes a digit and a separator */
    }
    free(ids);
    return 0;
}
