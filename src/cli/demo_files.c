/* demo_files.c: the output directory of `spruce demo`: a non-empty one is
 * refused unless --force, and a failed run removes what it wrote. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_demo.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) ? -1 : 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st))
        return;
    if (S_ISDIR(st.st_mode))
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        remove(path);
}

/* 1 when dir holds anything but . and .., 0 when empty, -1 when unreadable. */
static int dir_nonempty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int any = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            any = 1;
            break;
        }
    closedir(d);
    return any;
}

int demo_prepare_dir(demo_paths *p, const char *dir, int force)
{
    struct stat st;
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p->dir) {
        cli_fail("demo: --out: bad directory name");
        return 2;
    }
    memcpy(p->dir, dir, n + 1);
    while (n > 1 && p->dir[n - 1] == '/')
        p->dir[--n] = '\0';
    snprintf(p->model, sizeof p->model, "%s/model", p->dir);
    snprintf(p->pruned, sizeof p->pruned, "%s/pruned", p->dir);
    snprintf(p->masks, sizeof p->masks, "%s/masks.h5", p->dir);
    snprintf(p->calib, sizeof p->calib, "%s/calib.u16", p->dir);
    snprintf(p->held, sizeof p->held, "%s/heldout.u16", p->dir);
    p->created_dir = p->wrote_model = p->wrote_tokens = p->wrote_pruned = p->wrote_masks = 0;
    if (!stat(p->dir, &st)) {
        int ne;
        if (!S_ISDIR(st.st_mode)) {
            cli_fail("demo: %s exists and is not a directory", p->dir);
            return 1;
        }
        if ((ne = dir_nonempty(p->dir)) < 0) {
            cli_fail("demo: cannot read %s: %s", p->dir, strerror(errno));
            return 1;
        }
        if (ne && !force) {
            cli_fail("demo: %s exists and is not empty (use --force to replace the demo's "
                     "files in it, or --out DIR)", p->dir);
            return 1;
        }
        return 0;
    }
    if (mkdir(p->dir, 0777)) {
        cli_fail("demo: cannot create %s: %s", p->dir, strerror(errno));
        return 1;
    }
    p->created_dir = 1;
    return 0;
}

void demo_cleanup_failed(const demo_paths *p)
{
    if (p->wrote_model)
        rm_tree(p->model);
    if (p->wrote_pruned)
        rm_tree(p->pruned);
    if (p->wrote_masks)
        rm_tree(p->masks);
    if (p->wrote_tokens) {
        rm_tree(p->calib);
        rm_tree(p->held);
    }
    if (p->created_dir)
        rmdir(p->dir);
}
