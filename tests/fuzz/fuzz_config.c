/* fuzz_config.c: libFuzzer target for the config.json parser.
 *
 * Each input is a whole config.json in memory.  The parser must either reject
 * it with a negative SPRUCE_E* code and a detail message, or accept it with a
 * configuration the forward can size without overflow: every key at least 1
 * and within its bound (SPRUCE_MAX_*), the products of keys within theirs,
 * num_attention_heads a multiple of num_key_value_heads, an even head_dim,
 * and a family from the table.  Any crash, leak or sanitizer
 * report, or a broken invariant (abort), is a finding.
 * Built by tests/fuzz/run-fuzz. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spruce_config c;
    int rc = spruce__config_parse_buffer((const char *)data, size, "fuzz/config.json", &c);
    if (rc) {
        if (rc >= 0 || spruce_errdetail()[0] == '\0')
            abort(); /* a failure must be a negative code with a message */
        return 0;
    }
    if (!c.family || spruce_family_find(c.model_type) != c.family)
        abort();
    if (c.hidden_size < 1 || c.intermediate_size < 1 || c.num_hidden_layers < 1 ||
        c.num_attention_heads < 1 || c.num_key_value_heads < 1 || c.head_dim < 2 ||
        c.vocab_size < 1 || c.max_position_embeddings < 1 || c.sliding_window < 0)
        abort();
    if (c.hidden_size > SPRUCE_MAX_HIDDEN || c.intermediate_size > SPRUCE_MAX_INTERMEDIATE ||
        c.num_hidden_layers > SPRUCE_MAX_LAYERS || c.num_attention_heads > SPRUCE_MAX_HEADS ||
        c.num_key_value_heads > SPRUCE_MAX_HEADS || c.head_dim > SPRUCE_MAX_HEAD_DIM ||
        c.vocab_size > SPRUCE_MAX_VOCAB || c.max_position_embeddings > SPRUCE_MAX_POSITIONS)
        abort();
    if (c.num_attention_heads % c.num_key_value_heads || c.head_dim % 2 ||
        (int64_t)c.num_attention_heads * c.head_dim > SPRUCE_MAX_HIDDEN ||
        (int64_t)c.vocab_size * c.hidden_size > SPRUCE_MAX_TENSOR ||
        (int64_t)c.intermediate_size * c.hidden_size > SPRUCE_MAX_TENSOR)
        abort();
    if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0))
        abort();
    return 0;
}
