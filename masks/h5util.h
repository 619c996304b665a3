/* h5util.h: internal helpers of the mask file code (not installed). */
#ifndef SPRUCE_H5UTIL_H
#define SPRUCE_H5UTIL_H

#include <stddef.h>

#include <hdf5.h>

#include "spruce_masks.h"

void spruce__h5_quiet(void);
const char *spruce__h5_msg(void);
const char *spruce__h5_sys_msg(void);
hid_t spruce__h5_bool_type(void);
hid_t spruce__h5_vlen_string_type(void);
int spruce__h5_put_attr(hid_t obj, const char *key, hid_t type, const void *value);
int spruce__h5_put_string(hid_t obj, const char *key, const char *value);
int spruce__h5_get_string(hid_t obj, const char *key, char *buf, size_t cap);
int spruce__h5_get_double(hid_t obj, const char *key, double *out);
char *spruce__h5_dupstr(const char *s);
int spruce__h5_bad_name(const char *name);

#endif
