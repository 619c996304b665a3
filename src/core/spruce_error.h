/* spruce_error.h: status codes shared by every spruce library.
 *
 * Every library function that can fail returns an int: 0 on success, a negative
 * SPRUCE_E* code otherwise.  The code says what kind of failure it was; the
 * detail (which file, which tensor, the expected and the found shape) is kept
 * per thread and read with spruce_errdetail() right after the failing call.
 * Libraries never print and never exit: only the command-line program does. */
#ifndef SPRUCE_ERROR_H
#define SPRUCE_ERROR_H

#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, message): the single table of status codes. */
#define SPRUCE_ERRNO_MAP(XX)                                                   \
    XX(EINVAL,    -1,  "invalid argument")                                     \
    XX(ENOMEM,    -2,  "out of memory")                                        \
    XX(EIO,       -3,  "input/output error")                                   \
    XX(EFORMAT,   -4,  "malformed file")                                       \
    XX(ESHAPE,    -5,  "shape mismatch")                                       \
    XX(EDTYPE,    -6,  "unsupported data type")                                \
    XX(ENOTFOUND, -7,  "not found")                                            \
    XX(ENAN,      -8,  "non-finite value (NaN or Inf)")                        \
    XX(ESINGULAR, -9,  "matrix is not positive definite")                      \
    XX(EPATTERN,  -10, "matrix does not follow the sparsity pattern")          \
    XX(EUNSUPPORTED, -11, "unsupported")                                       \
    XX(EEXIST,    -12, "already exists")                                       \
    XX(EHDF5,     -13, "HDF5 error")                                           \
    XX(EACCES,    -14, "permission denied")                                    \
    XX(EROFS,     -15, "read-only file system")                                \
    XX(EISDIR,    -16, "is a directory")                                       \
    XX(ENOTREG,   -17, "not a regular file")                                   \
    XX(ENOSPC,    -18, "no space left on device")                              \
    XX(ECANCELED, -19, "stopped by a signal")

enum {
    SPRUCE_OK = 0,
#define XX(name, value, msg) SPRUCE_##name = value,
    SPRUCE_ERRNO_MAP(XX)
#undef XX
};

/* A static string describing the code ("unknown error" for unknown codes). */
const char *spruce_strerror(int code);

/* The detail message of the last failure on this thread, or "" if none was
 * recorded.  Valid until the next spruce call on the same thread. */
const char *spruce_errdetail(void);

/* Clear the detail message of this thread. */
void spruce_errclear(void);

/* Internal to the spruce libraries: record a detail message and return code. */
int spruce__seterr(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Stopping long steps early.  flag (NULL: none) is read, never written, by
 * the libraries' long steps between bounded pieces of work (a column block
 * of the pruner, at most 64 MiB of a shard copy or of a synthetic tensor):
 * when it is non-zero they stop, remove what they made and return
 * SPRUCE_ECANCELED.  A program points it at the flag its signal handler
 * sets.  One flag per process. */
void spruce_set_cancel_flag(const volatile sig_atomic_t *flag);
/* Internal to the spruce libraries: is the cancel flag set? */
int spruce__cancelled(void);

/* Internal to the spruce libraries: the status code for a system errno value
 * (ENOENT -> SPRUCE_ENOTFOUND, EACCES -> SPRUCE_EACCES, EROFS -> SPRUCE_EROFS,
 * ...; SPRUCE_EIO for the others), so that a failed open or create says which
 * failure it was.  The detail message still carries strerror(e). */
int spruce__errno_code(int e);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_ERROR_H */
