/* h5util.h: internal helpers of the mask file code (not installed). */
#ifndef SPRUCE_H5UTIL_H
#define SPRUCE_H5UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "spruce_masks.h"

void spruce__h5_quiet(void);
const char *spruce__h5_msg(void);
const char *spruce__h5_sys_msg(void);
hid_t spruce__h5_bool_type(void);
hid_t spruce__h5_fixed_string_type(size_t n);
int spruce__h5_put_attr(hid_t obj, const char *key, hid_t type, const void *value);
int spruce__h5_put_string(hid_t obj, const char *key, const char *value);
/* The longest string attribute a reader accepts (a damaged type can claim any size). */
#define SPRUCE_H5_MAX_STRING 65536
int spruce__h5_get_string(hid_t obj, const char *key, char *buf, size_t cap, const char **why);
int spruce__h5_get_number(hid_t obj, const char *key, double *d, int64_t *i, const char **why);
int spruce__h5_check_superblock(int fd, uint64_t *root, const char **why);
int spruce__h5_check_header(int fd, uint64_t addr, int mask_dataset,
                            int (*each)(const char *, void *), void *data, char *attr,
                            size_t attrcap, const char **why);
int spruce__h5_check_chunk_index(int fd, uint64_t btree, uint64_t rows, uint64_t cols,
                                 uint64_t crows, uint64_t ccols, unsigned nfilters,
                                 const char **why);
char *spruce__h5_dupstr(const char *s);
int spruce__h5_bad_name(const char *name);

#endif
