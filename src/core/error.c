/* error.c: the status code table and the per-thread detail message. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "spruce_error.h"

static _Thread_local char detail[1024];
static const volatile sig_atomic_t *cancel_flag;

void spruce_set_cancel_flag(const volatile sig_atomic_t *flag) { cancel_flag = flag; }

int spruce__cancelled(void) { return cancel_flag && *cancel_flag; }

const char *spruce_strerror(int code)
{
    switch (code) {
    case SPRUCE_OK: return "success";
#define XX(name, value, msg) case SPRUCE_##name: return msg;
    SPRUCE_ERRNO_MAP(XX)
#undef XX
    default: return "unknown error";
    }
}

const char *spruce_errdetail(void) { return detail; }

void spruce_errclear(void) { detail[0] = '\0'; }

int spruce__seterr(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return code;
}

int spruce__errno_code(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR: return SPRUCE_ENOTFOUND;
    case EACCES:
    case EPERM: return SPRUCE_EACCES;
    case EROFS: return SPRUCE_EROFS;
    case EISDIR: return SPRUCE_EISDIR;
    case ENOSPC:
    case EDQUOT: return SPRUCE_ENOSPC;
    case ENOMEM: return SPRUCE_ENOMEM;
    case EEXIST: return SPRUCE_EEXIST;
    default: return SPRUCE_EIO;
    }
}
