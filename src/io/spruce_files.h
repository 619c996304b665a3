/* spruce_files.h: opening a user's input file (internal to libspruce).
 *
 * Every reader of a user's file (token files, .npy, safetensors shards, the
 * shard index, config.json) goes through these, so that a directory, a FIFO,
 * a socket or a device is refused with its name before anything reads from it
 * (a read from a FIFO would block), and a failed open says why (not found,
 * permission denied, ...: spruce__errno_code). */
#ifndef SPRUCE_FILES_H
#define SPRUCE_FILES_H

#include <stdio.h>

/* 0 if path names a regular file (after symlinks); else a negative code with
 * a message naming path: SPRUCE_EISDIR, SPRUCE_ENOTREG ("is a FIFO ..."), or
 * the code of the failed stat. */
int spruce__check_regular(const char *path);

/* Open path for reading: O_NONBLOCK so that opening a FIFO cannot block, then
 * fstat on the open descriptor and refuse anything but a regular file, then
 * back to blocking reads.  0 and *fd, or a negative code as above. */
int spruce__open_regular(const char *path, int *fd);

/* The same as a stdio stream ("rb"). */
int spruce__fopen_regular(const char *path, FILE **fp);

#endif
