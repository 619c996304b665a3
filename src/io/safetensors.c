/* safetensors.c: parse and validate a safetensors header held in memory.
 *
 * Layout: u64 little-endian N, N bytes of a JSON object, the data section.
 *   {"__metadata__": {"k": "v", ...},
 *    "name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}, ...}
 * Offsets are relative to the data section.  Everything is checked before a
 * single byte of tensor data is used: the header length, the JSON, each
 * entry's fields, shape x itemsize == end - begin for known dtypes, ranges
 * inside the data section and not overlapping. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ckpt_internal.h"

static const struct {
    const char *name;
    size_t size;
    spruce_dtype dt;
} dtypes[] = {
    {"F32", 4, SPRUCE_DTYPE_F32},   {"F16", 2, SPRUCE_DTYPE_F16},
    {"BF16", 2, SPRUCE_DTYPE_BF16}, {"F64", 8, SPRUCE_DTYPE_OTHER},
    {"I64", 8, SPRUCE_DTYPE_OTHER}, {"I32", 4, SPRUCE_DTYPE_OTHER},
    {"I16", 2, SPRUCE_DTYPE_OTHER}, {"I8", 1, SPRUCE_DTYPE_OTHER},
    {"U64", 8, SPRUCE_DTYPE_OTHER}, {"U32", 4, SPRUCE_DTYPE_OTHER},
    {"U16", 2, SPRUCE_DTYPE_OTHER}, {"U8", 1, SPRUCE_DTYPE_OTHER},
    {"BOOL", 1, SPRUCE_DTYPE_OTHER}, {"F8_E4M3", 1, SPRUCE_DTYPE_OTHER},
    {"F8_E5M2", 1, SPRUCE_DTYPE_OTHER},
};

size_t spruce__dtype_itemsize(const char *name, spruce_dtype *dt)
{
    size_t i;
    for (i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(name, dtypes[i].name)) {
            *dt = dtypes[i].dt;
            return dtypes[i].size;
        }
    *dt = SPRUCE_DTYPE_OTHER;
    return 0;
}

void spruce__st_header_clear(spruce__st_header *h)
{
    int i;
    if (!h)
        return;
    for (i = 0; i < h->n; i++) {
        free(h->e[i].name);
        free(h->e[i].dtype_name);
    }
    free(h->e);
    for (i = 0; i < h->nmeta; i++) {
        free(h->meta_key[i]);
        free(h->meta_val[i]);
    }
    free(h->meta_key);
    free(h->meta_val);
    memset(h, 0, sizeof *h);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A JSON value as a non-negative integer; 0 on success. */
static int get_uint(const json_t *v, uint64_t *out)
{
    json_int_t x;
    if (!json_is_integer(v))
        return -1;
    x = json_integer_value(v);
    if (x < 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Describe v for an error message: the integer, or its kind. */
static const char *describe(const json_t *v, char *buf, size_t n)
{
    if (json_is_integer(v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else
        snprintf(buf, n, "%s", json_kind(v));
    return buf;
}

static int parse_entry(const char *fname, const char *name, json_t *v, uint64_t data_size,
                       spruce__st_entry *e)
{
    json_t *dt, *shape, *offs;
    size_t i, item;
    uint64_t numel = 1, nbytes;
    char buf[64];

    if (!json_is_object(v))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected an object, found %s",
                              fname, name, json_kind(v));
    dt = json_object_get(v, "dtype");
    shape = json_object_get(v, "shape");
    offs = json_object_get(v, "data_offsets");
    if (!dt || !json_is_string(dt))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected \"dtype\" to be a string, found %s",
                              fname, name, dt ? json_kind(dt) : "nothing");
    if (!shape || !json_is_array(shape))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected \"shape\" to be an array, found %s",
                              fname, name, shape ? json_kind(shape) : "nothing");
    if (!offs || !json_is_array(offs) || json_array_size(offs) != 2)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: tensor '%s': expected \"data_offsets\" to be [begin, end], found %s%s",
                              fname, name, offs ? json_kind(offs) : "nothing",
                              offs && json_is_array(offs) ? " of another length" : "");
    if (json_array_size(shape) > SPRUCE_MAX_DIMS)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected at most %d dimensions, found %zu",
                              fname, name, SPRUCE_MAX_DIMS, json_array_size(shape));
    e->ndim = (int)json_array_size(shape);
    for (i = 0; i < json_array_size(shape); i++) {
        uint64_t d;
        json_t *s = json_array_get(shape, i);
        if (get_uint(s, &d) || d > (uint64_t)INT64_MAX)
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: tensor '%s': expected shape[%zu] to be a non-negative integer, found %s",
                                  fname, name, i, describe(s, buf, sizeof buf));
        e->shape[i] = (int64_t)d;
        if (d && numel > (uint64_t)INT64_MAX / d)
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: tensor '%s': expected a shape whose product fits in 63 bits, found an overflow at shape[%zu]",
                                  fname, name, i);
        numel *= d;
    }
    if (get_uint(json_array_get(offs, 0), &e->begin) || get_uint(json_array_get(offs, 1), &e->end)) {
        char b2[64];
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: tensor '%s': expected data_offsets to be non-negative integers, found [%s, %s]",
                              fname, name, describe(json_array_get(offs, 0), buf, sizeof buf),
                              describe(json_array_get(offs, 1), b2, sizeof b2));
    }
    if (e->begin > e->end)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: tensor '%s': expected data_offsets begin <= end, found [%llu, %llu]",
                              fname, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: tensor '%s': expected data_offsets inside the %llu-byte data section, found end %llu",
                              fname, name, (unsigned long long)data_size, (unsigned long long)e->end);
    item = spruce__dtype_itemsize(json_string_value(dt), &e->dtype);
    if (item) {
        if (numel > UINT64_MAX / item)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': byte size of the shape overflows",
                                  fname, name);
        nbytes = numel * item;
        if (nbytes != e->end - e->begin)
            return spruce__seterr(SPRUCE_ESHAPE,
                                  "%s: tensor '%s': expected %llu bytes (%llu elements of %s), found data_offsets [%llu, %llu] (%llu bytes)",
                                  fname, name, (unsigned long long)nbytes, (unsigned long long)numel,
                                  json_string_value(dt), (unsigned long long)e->begin,
                                  (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    }
    e->name = strdup(name);
    e->dtype_name = strdup(json_string_value(dt));
    if (!e->name || !e->dtype_name)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading the header", fname);
    return 0;
}

static int parse_metadata(const char *fname, json_t *v, spruce__st_header *h)
{
    const char *k;
    json_t *s;
    size_t n;
    if (!json_is_object(v))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: __metadata__: expected an object, found %s",
                              fname, json_kind(v));
    n = json_object_size(v);
    h->meta_key = calloc(n ? n : 1, sizeof *h->meta_key);
    h->meta_val = calloc(n ? n : 1, sizeof *h->meta_val);
    if (!h->meta_key || !h->meta_val)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading __metadata__", fname);
    json_object_foreach(v, k, s) {
        if (!json_is_string(s))
            return spruce__seterr(SPRUCE_EFORMAT, "%s: __metadata__: key '%s': expected a string, found %s",
                                  fname, k, json_kind(s));
        h->meta_key[h->nmeta] = strdup(k);
        h->meta_val[h->nmeta] = strdup(json_string_value(s));
        h->nmeta++;
        if (!h->meta_key[h->nmeta - 1] || !h->meta_val[h->nmeta - 1])
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading __metadata__", fname);
    }
    return 0;
}

static int by_begin(const void *a, const void *b)
{
    const spruce__st_entry *x = *(const spruce__st_entry *const *)a;
    const spruce__st_entry *y = *(const spruce__st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

int spruce__safetensors_parse(const uint8_t *buf, size_t len, const char *fname,
                              spruce__st_header *h)
{
    uint64_t hlen = 0;
    json_t *root = NULL, *v;
    json_error_t jerr;
    const char *k;
    spruce__st_entry **order = NULL;
    int i, rc = 0, nsorted = 0;

    memset(h, 0, sizeof *h);
    if (!buf && len)
        return spruce__seterr(SPRUCE_EINVAL, "%s: no buffer", fname);
    if (len < 8)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: expected at least 8 bytes (the header length), found a %zu-byte file",
                              fname, len);
    for (i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    if (hlen > len - 8)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: header length %llu runs past the end of the file (expected at most %zu)",
                              fname, (unsigned long long)hlen, len - 8);
    if (hlen > SPRUCE__ST_MAX_HEADER)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: expected a header of at most %u bytes, found %llu",
                              fname, SPRUCE__ST_MAX_HEADER, (unsigned long long)hlen);
    if (hlen < 2)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: header length %llu is too short for a JSON object", fname,
                              (unsigned long long)hlen);
    h->header_len = hlen;
    h->data_start = 8 + hlen;
    h->data_size = len - 8 - hlen;

    root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: header is not valid JSON: %s (line %d, column %d)",
                            fname, jerr.text, jerr.line, jerr.column);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: expected the header to be a JSON object, found %s",
                            fname, json_kind(root));
        goto done;
    }
    h->e = calloc(json_object_size(root) + 1, sizeof *h->e);
    order = calloc(json_object_size(root) + 1, sizeof *order);
    if (!h->e || !order) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading the header", fname);
        goto done;
    }
    json_object_foreach(root, k, v) {
        if (!strcmp(k, "__metadata__")) {
            if ((rc = parse_metadata(fname, v, h)))
                goto done;
            continue;
        }
        rc = parse_entry(fname, k, v, h->data_size, &h->e[h->n]);
        h->n++; /* so that clear() frees a half-filled entry too */
        if (rc)
            goto done;
        if (h->e[h->n - 1].end > h->e[h->n - 1].begin)
            order[nsorted++] = &h->e[h->n - 1];
    }
    /* Ranges must not overlap (empty tensors occupy nothing). */
    qsort(order, (size_t)nsorted, sizeof *order, by_begin);
    for (i = 1; i < nsorted; i++)
        if (order[i]->begin < order[i - 1]->end) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: tensor '%s': expected data_offsets not overlapping other tensors, found [%llu, %llu] overlapping '%s' [%llu, %llu]",
                                fname, order[i]->name, (unsigned long long)order[i]->begin,
                                (unsigned long long)order[i]->end, order[i - 1]->name,
                                (unsigned long long)order[i - 1]->begin,
                                (unsigned long long)order[i - 1]->end);
            goto done;
        }
done:
    free(order);
    json_decref(root);
    if (rc)
        spruce__st_header_clear(h);
    return rc;
}
