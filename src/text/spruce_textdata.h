/* spruce_textdata.h: calibration and evaluation data as files of ids, text or
 * JSON lines, read with a model's tokenizer.
 *
 * Windows are drawn as the published SparseGPT and Wanda pipelines draw them
 * (datautils.py: get_wikitext2, get_c4): from one text, nsamples windows of
 * seqlen tokens at random starts of the whole tokenized text; from JSON lines
 * (one object with a "text" string per line, C4's layout), per sample a random
 * document tokenized on its own, redrawn until it holds at least seqlen
 * tokens, then a random window of it.  A start is drawn uniformly in
 * [0, n - seqlen - 1] as random.randint(0, n - seqlen - 1) does (0 when
 * n == seqlen).  The generator is spruce's own (splitmix64 seeded with seed),
 * not Python's: the same seed gives the same windows in spruce, not the ones
 * the Python code would pick.
 *
 * Every function returns 0 or a negative SPRUCE_E* code with the detail
 * (the file, the line or byte offset, what was expected) in spruce_errdetail(). */
#ifndef SPRUCE_TEXTDATA_H
#define SPRUCE_TEXTDATA_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SPRUCE_DATA_AUTO = 0, /* decide from the name and the content */
    SPRUCE_DATA_IDS,      /* decimal ids separated by whitespace */
    SPRUCE_DATA_U16,      /* raw little-endian uint16 ids */
    SPRUCE_DATA_U32,      /* raw little-endian uint32 ids */
    SPRUCE_DATA_TEXT,     /* UTF-8 text, tokenized as one text */
    SPRUCE_DATA_JSONL     /* one JSON object with a "text" string per line */
} spruce_data_format;

/* "ids", "u16", "u32", "text", "jsonl" (and "auto"); SPRUCE_EINVAL otherwise. */
int spruce_data_format_parse(const char *name, spruce_data_format *f);
const char *spruce_data_format_name(spruce_data_format f);

/* How path is read: .u16 / .u32 raw ids, .jsonl documents, any other file ids
 * when it holds only whitespace-separated decimal numbers (and at least one),
 * text otherwise.  An empty file or one that cannot be opened is an error. */
int spruce_data_detect(const char *path, spruce_data_format *f);

/* 1 for text and jsonl. */
int spruce_data_needs_tokenizer(spruce_data_format f);

/* Every id of path read as f (not AUTO): token files as they are; text
 * tokenized once, whole, with the post-processor's special tokens when
 * add_special (as tokenizer(text) does); jsonl every document tokenized on its
 * own (with add_special) one after the other.  tok is needed for text and
 * jsonl (SPRUCE_EINVAL naming the file when NULL).  progress as
 * spruce_tokenizer_encode_file (bytes of the file).  *ids is malloc'ed. */
int spruce_data_read_ids(const char *path, spruce_data_format f, const spruce_tokenizer *tok,
                         int add_special, spruce_tokenizer_progress progress, void *ctx,
                         uint32_t **ids, size_t *n);

/* Where a calibration window came from: the document (its 0-based line in a
 * jsonl file; -1 for one text or a token file) and its first token. */
typedef struct {
    int64_t doc;
    size_t start;
} spruce_data_window;

/* Calibration windows of seqlen tokens from path read as f (not AUTO):
 * token files give their consecutive non-overlapping windows, at most
 * nsamples (fewer when the file is shorter); text and jsonl nsamples random
 * windows drawn with seed as above (the text tokenized with add_special, each
 * document too).  *ids (count x seqlen) and *win (count) are malloc'ed;
 * *count is how many.  Fewer than seqlen tokens in a text or a token file,
 * or no document with at least seqlen tokens, is SPRUCE_EINVAL naming the
 * file. */
int spruce_data_calib(const char *path, spruce_data_format f, const spruce_tokenizer *tok,
                      int add_special, int nsamples, int seqlen, uint64_t seed,
                      spruce_tokenizer_progress progress, void *ctx, uint32_t **ids,
                      spruce_data_window **win, int *count);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_TEXTDATA_H */
