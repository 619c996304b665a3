/* text_internal.h: what the parts of the tokenizer (src/text) share.
 *
 * The stages follow the Hugging Face `tokenizers` library (Rust):
 * added_vocabulary.rs (added tokens), normalizers/, pre_tokenizers/,
 * models/bpe/ (model.rs, word.rs), processors/, decoders/. */
#ifndef SPRUCE_TEXT_INTERNAL_H
#define SPRUCE_TEXT_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "spruce_tokenizer.h"

/* A growable byte string. */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf;
int spruce__sbuf_put(sbuf *b, const void *p, size_t n);
void spruce__sbuf_free(sbuf *b);

/* Pieces of text: piece i is buf.s[off[i] .. off[i] + len[i]); first[i] says
 * that it starts at offset 0 of the original text (Metaspace's "first"). */
typedef struct {
    sbuf buf;
    size_t *off, *len;
    unsigned char *first;
    size_t n, cap;
} pieces;
int spruce__pieces_add(pieces *p, const char *s, size_t n, int first);
/* Start a piece whose bytes are appended to p->buf afterwards; end it with
 * spruce__pieces_end (an empty piece is dropped). */
int spruce__pieces_begin(pieces *p, int first);
void spruce__pieces_end(pieces *p);
void spruce__pieces_clear(pieces *p);
void spruce__pieces_free(pieces *p);

/* String -> id, open addressing over an arena of keys. */
typedef struct {
    sbuf keys;
    uint32_t *off, *klen, *val; /* per slot; klen UINT32_MAX = empty */
    size_t cap, count;
} strmap;
int spruce__strmap_init(strmap *m, size_t expect);
int spruce__strmap_put(strmap *m, const char *k, size_t n, uint32_t v);
/* 0 and *v when found, -1 otherwise. */
int spruce__strmap_get(const strmap *m, const char *k, size_t n, uint32_t *v);
void spruce__strmap_free(strmap *m);

/* A compiled regular expression (PCRE2, UTF + UCP, JIT when available). */
typedef struct {
    pcre2_code *code;
    int jit;
} regex;
int spruce__regex_compile(regex *re, const char *pat, size_t n, const char *path,
                          const char *where);
void spruce__regex_free(regex *re);
/* The next match in s[0..n) at or after start: 1 and [*ms, *me), 0 when none,
 * negative on a matching error.  md is a match-data block for re. */
int spruce__regex_next(const regex *re, pcre2_match_data *md, const char *s, size_t n,
                       size_t start, size_t *ms, size_t *me);

/* A pattern of Split, Replace: a literal string or a regex. */
typedef struct {
    int is_regex;
    char *lit;
    size_t lit_len;
    regex re;
} pattern;
int spruce__pattern_parse(pattern *p, json_t *j, const char *path, const char *where);
void spruce__pattern_free(pattern *p);
/* The next match as spruce__regex_next. */
int spruce__pattern_next(const pattern *p, pcre2_match_data *md, const char *s, size_t n,
                         size_t start, size_t *ms, size_t *me);

/* Normalizers (normalizers/). */
typedef struct normalizer normalizer;
int spruce__normalizer_parse(normalizer **out, json_t *j, const char *path);
void spruce__normalizer_free(normalizer *nz);
/* Normalize s[0..n) into out (cleared first). */
int spruce__normalize(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n,
                      sbuf *out);

/* Normalize a part of a stretch that does not start it (Prepend skipped). */
int spruce__normalize_cont(const normalizer *nz, pcre2_match_data *md, const char *s, size_t n,
                           sbuf *out);
/* 1 when a stretch may be normalized in parts cut before a '\n' that follows
 * an ASCII letter or digit (see normalize.c). */
int spruce__normalizer_cuttable(const normalizer *nz);

/* Pre-tokenizers (pre_tokenizers/). */
typedef struct pretok pretok;
int spruce__pretok_parse(pretok **out, json_t *j, const char *path);
void spruce__pretok_free(pretok *pt);
/* 1 when a cut before a '\n' that follows an ASCII letter or digit is always a
 * boundary between pre-tokens (see pretok.c); 0 when that is not known. */
int spruce__pretok_cuttable(const pretok *pt);
/* Split every piece of *p; *p and *tmp are swapped as needed. */
int spruce__pretokenize(const pretok *pt, pcre2_match_data *md, pieces **p, pieces **tmp);

/* The BPE model (models/bpe/model.rs, word.rs). */
/* model.vocab and model.merges as flat lists (bpe_lists.c): the strings in
 * s, per vocabulary entry (offset, length, id), per merge (offset, length) of
 * each half, in the file's order. */
typedef struct {
    sbuf s;
    uint32_t *v, *m;
    size_t nvocab, nmerge, capv, capm;
    int have_merges; /* model.merges is present */
    int from_text;   /* read from the text, which now holds {} and [] in their place */
} bpe_lists;
int spruce__bpe_lists_vocab(bpe_lists *l, const char *k, size_t n, uint32_t id);
int spruce__bpe_lists_merge(bpe_lists *l, const char *a, size_t na, const char *b, size_t nb);
/* Read vocab and merges straight from the *n bytes of a tokenizer.json text:
 * 1 when read (the two values in text replaced by {} and [] and the newlines
 * they held, *n the new length), 0 when the text is left for jansson
 * (nothing changed), SPRUCE_ENOMEM. */
int spruce__bpe_lists_from_text(bpe_lists *l, char *text, size_t *n);
/* From jansson's values (merges may be NULL); errors name the bad entry. */
int spruce__bpe_lists_from_json(bpe_lists *l, json_t *vocab, json_t *merges, const char *path);
void spruce__bpe_lists_free(bpe_lists *l);

typedef struct bpe bpe;
/* The BPE model j ("model" of tokenizer.json); its vocab and merges from
 * lists when not NULL (spruce__bpe_lists_from_text), else from j. */
int spruce__bpe_parse(bpe **out, json_t *j, const bpe_lists *lists, const char *path);
void spruce__bpe_free(bpe *m);
const strmap *spruce__bpe_vocab(const bpe *m);
/* Byte ranges [a, b) of a text, each with a tag (the pre-tokenizers: 1 for a
 * match of the pattern, 0 for the text between; the added tokens: the added
 * token's index, -1 for text), in a growable array. */
typedef struct {
    size_t a, b;
    int32_t tag;
} span;
typedef struct {
    span *v;
    size_t n, cap;
} spans;
int spruce__span_push(spans *s, size_t a, size_t b, int32_t tag);
/* Append the ids of one pre-token s[0..n) to *ids. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} idvec;
int spruce__idvec_push(idvec *v, uint32_t id);
typedef struct bpe_work bpe_work;
int spruce__bpe_encode(const bpe *m, bpe_work **w, const char *s, size_t n, idvec *ids);
void spruce__bpe_work_free(bpe_work *w);
/* The reference merge (quadratic: repeatedly the lowest-rank adjacent pair),
 * for tests; same contract as spruce__bpe_encode. */
int spruce__bpe_encode_naive(const bpe *m, const char *s, size_t n, idvec *ids);
/* The model's token strings by id (NULL where none), and their count. */
const char *spruce__bpe_token(const bpe *m, uint32_t id, size_t *len);
uint32_t spruce__bpe_size(const bpe *m);
/* 1 when no merge can join a '\n' to its neighbours (see bpe.c). */
int spruce__bpe_newline_wall(const bpe *m);

/* Decoders (decoders/). */
typedef struct decoder decoder;
int spruce__decoder_parse(decoder **out, json_t *j, const char *path);
void spruce__decoder_free(decoder *d);
/* Tokens as pieces in, text out. */
int spruce__decode(const decoder *d, pcre2_match_data *md, pieces **toks, pieces **tmp,
                   sbuf *out);

/* ByteLevel's byte <-> character tables (pre_tokenizers/byte_level.rs). */
/* The UTF-8 of byte b's character (1 or 2 bytes) into out; returns its length. */
int spruce__bytelevel_char(unsigned b, char out[2]);
/* The byte of code point c, or -1 when c is not one of the 256. */
int spruce__bytelevel_byte(uint32_t c);

/* UTF-8: the code point at s[i] (valid input) and its length. */
uint32_t spruce__utf8_get(const char *s, size_t n, size_t i, int *clen);
int spruce__utf8_put(uint32_t c, char out[4]);
/* The offset of the first invalid byte of s[0..n), or n when valid. */
size_t spruce__utf8_check(const char *s, size_t n);
/* Rust's String::from_utf8_lossy of s[0..n) appended to out. */
int spruce__utf8_lossy(const char *s, size_t n, sbuf *out);
/* Rust's char::is_whitespace (Unicode White_Space). */
int spruce__is_space(uint32_t c);

/* encode with stretches cut into parts of about chunk bytes (0: whole), for
 * the tests of streaming; same contract as spruce_tokenizer_encode. */
int spruce__tokenizer_encode_chunked(const spruce_tokenizer *t, const char *text, size_t len,
                                     int add_special, size_t chunk, uint32_t **ids, size_t *n);
/* Map a regular file read-only (*data "" and *len 0 when empty); unmap it. */
int spruce__map_file(const char *path, const char **data, size_t *len);
void spruce__unmap_file(const char *data, size_t len);

#endif
