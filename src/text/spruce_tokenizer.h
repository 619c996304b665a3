/* spruce_tokenizer.h: Hugging Face tokenizer.json tokenizers (BPE), in C.
 *
 * A tokenizer.json is read as the Hugging Face `tokenizers` library (Rust,
 * 0.22) reads it, and encoding gives the ids that library gives: added tokens
 * are split out of the raw text first, the rest goes through the normalizer,
 * the pre-tokenizer and the BPE model, then the post-processor adds its
 * special tokens when asked.  What is supported is listed in doc/tokenizer.md;
 * anything else in the file is refused with an error naming the component.
 *
 * Every function returns 0 or a negative SPRUCE_E* code with the detail in
 * spruce_errdetail().  A tokenizer is read-only after loading: encode and
 * decode may run on it from several threads at once. */
#ifndef SPRUCE_TOKENIZER_H
#define SPRUCE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spruce_tokenizer spruce_tokenizer;

/* Load path: a tokenizer.json file, or a model directory holding one.  The
 * bos/eos tokens are read from tokenizer_config.json beside it when present. */
int spruce_tokenizer_load(const char *path, spruce_tokenizer **tok);

/* Free the tokenizer; NULL is a no-op. */
void spruce_tokenizer_free(spruce_tokenizer *tok);

/* Encode len bytes of UTF-8 text into a malloc'ed array of ids (*ids, *n;
 * the caller free()s *ids, which is NULL when *n is 0).  add_special: apply
 * the post-processor's special tokens (e.g. Mistral's <s>).  Invalid UTF-8 is
 * SPRUCE_EINVAL naming the byte offset. */
int spruce_tokenizer_encode(const spruce_tokenizer *tok, const char *text, size_t len,
                            int add_special, uint32_t **ids, size_t *n);

/* Encode the UTF-8 text file path as spruce_tokenizer_encode encodes its
 * whole content, streaming: the file is mapped (not read into memory) and
 * encoded in parts of about SPRUCE_TOKENIZER_CHUNK bytes, cut only where the
 * ids cannot change (spruce_tokenizer_streams; else each stretch between
 * added tokens is one part), so the memory beyond the ids is that of a part.
 * progress, when not NULL, is called after each part with the bytes done and
 * the file's size.  Invalid UTF-8 is SPRUCE_EFORMAT naming the file and the
 * byte offset. */
#define SPRUCE_TOKENIZER_CHUNK ((size_t)1 << 20)
typedef void (*spruce_tokenizer_progress)(void *ctx, size_t done, size_t total);
int spruce_tokenizer_encode_file(const spruce_tokenizer *tok, const char *path, int add_special,
                                 spruce_tokenizer_progress progress, void *ctx, uint32_t **ids,
                                 size_t *n);

/* 1 when long stretches of text are encoded in parts (cut before a newline
 * that follows an ASCII letter or digit, where the normalizer, the
 * pre-tokenizer and the model are known to give the ids of the whole), 0 when
 * each stretch between added tokens is encoded whole (doc/tokenizer.md). */
int spruce_tokenizer_streams(const spruce_tokenizer *tok);

/* Decode n ids into malloc'ed UTF-8 text (*text, NUL-terminated, *len bytes
 * before the NUL; the caller free()s it).  skip_special: leave out special
 * added tokens.  An id with no token is SPRUCE_EINVAL naming it. */
int spruce_tokenizer_decode(const spruce_tokenizer *tok, const uint32_t *ids, size_t n,
                            int skip_special, char **text, size_t *len);

/* One more than the largest id of the vocabulary and the added tokens. */
uint32_t spruce_tokenizer_vocab_size(const spruce_tokenizer *tok);

/* The id of a token string (added tokens first, then the model's vocabulary),
 * or -1 when there is none. */
int64_t spruce_tokenizer_token_id(const spruce_tokenizer *tok, const char *token, size_t len);

/* The token string of an id (NUL-terminated, owned by the tokenizer), or NULL. */
const char *spruce_tokenizer_token(const spruce_tokenizer *tok, uint32_t id);

/* Whether id is a special added token (0 or 1). */
int spruce_tokenizer_is_special(const spruce_tokenizer *tok, uint32_t id);

/* The bos/eos token ids named by tokenizer_config.json, or -1 when unknown. */
int64_t spruce_tokenizer_bos(const spruce_tokenizer *tok);
int64_t spruce_tokenizer_eos(const spruce_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_TOKENIZER_H */
