/* fuzz_tokenizer.c: libFuzzer target for the tokenizer.json loader.
 *
 * Each input is a whole tokenizer.json, written to one temporary file (the
 * loader reads a path).  The loader must refuse it with a SPRUCE_E* code and
 * a message, or load it; a loaded tokenizer then encodes a fixed text (with
 * and without special tokens) into ids below its vocabulary size, or refuses
 * with a message, and decodes those ids (or refuses with a message).  Any
 * crash, leak, hang or sanitizer report, or a broken invariant (abort), is a
 * finding.  Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spruce_error.h"
#include "spruce_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char text[] = "Hello world, 12 h\xc3\xa9llo!\n\tHELLO  <s> <|end|>";

static void encode_decode(const spruce_tokenizer *tok, int special)
{
    uint32_t *ids = NULL;
    size_t n = 0, k, len;
    char *out = NULL;
    int rc = spruce_tokenizer_encode(tok, text, sizeof text - 1, special, &ids, &n);
    if (rc) {
        if (rc >= 0 || spruce_errdetail()[0] == '\0')
            abort();
        return;
    }
    for (k = 0; k < n; k++)
        if (ids[k] >= spruce_tokenizer_vocab_size(tok))
            abort();
    rc = spruce_tokenizer_decode(tok, ids, n, 0, &out, &len);
    if (rc ? rc >= 0 || spruce_errdetail()[0] == '\0' : strlen(out) > len)
        abort();
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    spruce_tokenizer *tok = NULL;
    FILE *f;
    int rc;
    if (!path[0])
        snprintf(path, sizeof path, "fuzz-tokenizer-%ld.json", (long)getpid());
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    rc = spruce_tokenizer_load(path, &tok);
    if (rc) {
        if (rc >= 0 || tok || spruce_errdetail()[0] == '\0')
            abort();
        return 0;
    }
    encode_decode(tok, 0);
    encode_decode(tok, 1);
    spruce_tokenizer_free(tok);
    return 0;
}
