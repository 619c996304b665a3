/* test_io_bad.c: careless input paths.  A failed open says which failure it
 * was (not found, permission denied, read-only file system), a directory or a
 * FIFO given as an input file is refused by name before anything reads it, and
 * the .npy header's messages quote only the offending value. */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/mount.h>
#include <sys/vfs.h>

#include "ckpt_testutil.h"
#include "npy.h"
#include "spruce_model.h"
#include "spruce_tokens.h"

#define SYSFS_MAGIC_NUMBER 0x62656572

static char *dir;

static void setup(void) { dir = mktmp(); }

static void teardown(void)
{
    rmrf(dir);
    free(dir);
}

/* A FIFO at dir/name (nobody ever writes to it: a reader that opens it
 * without O_NONBLOCK, or reads it, blocks; the timeout makes that a failure). */
static char *fifo(const char *name)
{
    char *p = path2(dir, name);
    cr_assert_eq(mkfifo(p, 0600), 0, "mkfifo %s: %s", p, strerror(errno));
    return p;
}

static void assert_detail_has(const char *a, const char *b)
{
    cr_assert(strstr(spruce_errdetail(), a) != NULL, "'%s' not in: %s", a, spruce_errdetail());
    if (b)
        cr_assert(strstr(spruce_errdetail(), b) != NULL, "'%s' not in: %s", b, spruce_errdetail());
}

Test(io_bad, errno_values_map_to_their_own_codes)
{
    struct {
        int e, code;
        const char *msg;
    } m[] = {
        {ENOENT, SPRUCE_ENOTFOUND, "not found"},  {EACCES, SPRUCE_EACCES, "permission denied"},
        {EPERM, SPRUCE_EACCES, "permission denied"}, {EROFS, SPRUCE_EROFS, "read-only file system"},
        {EISDIR, SPRUCE_EISDIR, "is a directory"}, {ENOSPC, SPRUCE_ENOSPC, "no space left on device"},
        {EIO, SPRUCE_EIO, "input/output error"},
    };
    size_t i;
    for (i = 0; i < sizeof m / sizeof m[0]; i++) {
        cr_assert_eq(spruce__errno_code(m[i].e), m[i].code, "errno %d", m[i].e);
        cr_assert_str_eq(spruce_strerror(m[i].code), m[i].msg);
    }
}

/* ---- not found ---------------------------------------------------------------- */

Test(io_bad, a_missing_file_is_not_found_in_every_reader, .init = setup, .fini = teardown)
{
    char *p = path2(dir, "none.u16"), *q = path2(dir, "none.npy"), *s = path2(dir, "none.safetensors");
    uint32_t *ids;
    size_t n;
    float *d;
    int64_t r, c;
    spruce_ckpt *ck;
    spruce_config cfg;
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), SPRUCE_ENOTFOUND);
    assert_detail_has(p, "No such file");
    cr_assert_eq(spruce__npy_read(q, &d, &r, &c), SPRUCE_ENOTFOUND);
    assert_detail_has(q, "No such file");
    cr_assert_eq(spruce_ckpt_open_file(s, &ck), SPRUCE_ENOTFOUND);
    assert_detail_has(s, NULL);
    cr_assert_eq(spruce_config_load(dir, &cfg), SPRUCE_ENOTFOUND);
    assert_detail_has("config.json", NULL);
    free(p);
    free(q);
    free(s);
}

/* ---- a directory or a FIFO as an input file ------------------------------------- */

Test(io_bad, a_directory_as_a_token_or_npy_file_says_so, .init = setup, .fini = teardown)
{
    char *p = path2(dir, "calib.u16"), *q = path2(dir, "w.npy");
    uint32_t *ids;
    size_t n;
    float *d;
    int64_t r, c;
    cr_assert_eq(mkdir(p, 0700), 0);
    cr_assert_eq(mkdir(q, 0700), 0);
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), SPRUCE_EISDIR);
    assert_detail_has(p, "is a directory");
    cr_assert_eq(spruce__npy_read(q, &d, &r, &c), SPRUCE_EISDIR);
    assert_detail_has(q, "is a directory");
    free(p);
    free(q);
}

Test(io_bad, a_fifo_is_refused_by_every_reader_without_blocking, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char *t = fifo("calib.u16"), *x = fifo("calib.txt"), *w = fifo("w.npy"), *s = fifo("m.safetensors");
    uint32_t *ids;
    size_t n;
    float *d;
    int64_t r, c;
    spruce_ckpt *ck;
    cr_assert_eq(spruce_tokens_load(t, &ids, &n), SPRUCE_ENOTREG);
    assert_detail_has(t, "FIFO");
    cr_assert_eq(spruce_tokens_load(x, &ids, &n), SPRUCE_ENOTREG);
    assert_detail_has(x, "FIFO");
    cr_assert_eq(spruce__npy_read(w, &d, &r, &c), SPRUCE_ENOTREG);
    assert_detail_has(w, "FIFO");
    cr_assert_eq(spruce_ckpt_open_file(s, &ck), SPRUCE_ENOTREG);
    assert_detail_has(s, "FIFO");
    free(t);
    free(x);
    free(w);
    free(s);
}

Test(io_bad, a_fifo_in_a_checkpoint_directory_is_refused, .init = setup, .fini = teardown,
     .timeout = 60)
{
    spruce_ckpt *ck;
    spruce_config cfg;
    char *shard = fifo("model.safetensors"), *cj = fifo("config.json"), *sub = path2(dir, "sharded"),
         *idx;
    cr_assert_eq(spruce_ckpt_open(dir, &ck), SPRUCE_ENOTREG);
    assert_detail_has("model.safetensors", "FIFO");
    cr_assert_eq(spruce_config_load(dir, &cfg), SPRUCE_ENOTREG);
    assert_detail_has("config.json", "FIFO");
    /* the shard index of a sharded checkpoint */
    cr_assert_eq(mkdir(sub, 0700), 0);
    idx = path2(sub, "model.safetensors.index.json");
    cr_assert_eq(mkfifo(idx, 0600), 0);
    cr_assert_eq(spruce_ckpt_open(sub, &ck), SPRUCE_ENOTREG);
    assert_detail_has("model.safetensors.index.json", "FIFO");
    free(shard);
    free(cj);
    free(sub);
    free(idx);
}

/* ---- permission denied, read-only file system --------------------------------------- */

Test(io_bad, an_unreadable_or_unwritable_path_is_permission_denied, .init = setup, .fini = teardown)
{
    uint32_t ids[3] = {1, 2, 3}, *back;
    size_t n;
    if (geteuid() != 0) {
        char *p = path2(dir, "secret.u16");
        write_bytes(p, ids, 4);
        cr_assert_eq(chmod(p, 0), 0);
        cr_assert_eq(spruce_tokens_load(p, &back, &n), SPRUCE_EACCES);
        assert_detail_has(p, "Permission denied");
        free(p);
    } else {
        /* root reads any file; creating a file at the top of sysfs is refused
         * to root too */
        struct statfs fs;
        if (statfs("/sys", &fs) != 0 || (unsigned long)fs.f_type != SYSFS_MAGIC_NUMBER)
            cr_skip_test("running as root and /sys is not sysfs: no path refuses root's writes");
        cr_assert_eq(spruce_tokens_save("/sys/spruce-test-denied.u16", ids, 3), SPRUCE_EACCES,
                     "%s", spruce_errdetail());
        assert_detail_has("/sys/spruce-test-denied.u16", NULL);
        cr_assert_eq(spruce__npy_write("/sys/spruce-test-denied.npy", (float *)ids, 1, 3), SPRUCE_EACCES,
                     "%s", spruce_errdetail());
    }
}

/* In a child with its own mount namespace, a read-only tmpfs over dir/ro:
 * saving there is SPRUCE_EROFS.  Exit 0 pass, 1 fail, 77 no namespace. */
static int rofs_child(const char *ro)
{
    uint32_t ids[2] = {1, 2};
    float w[2] = {1, 2};
    if (unshare(CLONE_NEWNS) != 0) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return 77;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("none", ro, "tmpfs", MS_RDONLY, NULL) != 0)
        return 77;
    {
        char t[4200], q[4200];
        snprintf(t, sizeof t, "%s/ids.u16", ro);
        snprintf(q, sizeof q, "%s/w.npy", ro);
        if (spruce_tokens_save(t, ids, 2) != SPRUCE_EROFS || !strstr(spruce_errdetail(), "Read-only"))
            return 1;
        if (spruce__npy_write(q, w, 1, 2) != SPRUCE_EROFS)
            return 1;
    }
    return 0;
}

Test(io_bad, a_read_only_file_system_says_so, .init = setup, .fini = teardown)
{
    char *ro = path2(dir, "ro");
    pid_t pid;
    int st = 0;
    cr_assert_eq(mkdir(ro, 0700), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        _exit(rofs_child(ro));
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        cr_skip_test("no mount namespace here (unshare or mount refused): cannot make a read-only file system");
    cr_assert_eq(WEXITSTATUS(st), 0, "saving on a read-only tmpfs did not give SPRUCE_EROFS");
    free(ro);
}

/* ---- the .npy header -------------------------------------------------------------- */

static char *npy_file(const char *hdr, size_t payload)
{
    char *p = path2(dir, "h.npy");
    size_t hl = strlen(hdr);
    unsigned char *b = calloc(1, 10 + hl + payload);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (unsigned char)(hl & 0xff);
    b[9] = (unsigned char)(hl >> 8);
    memcpy(b + 10, hdr, hl);
    write_bytes(p, b, 10 + hl + payload);
    free(b);
    return p;
}

Test(io_bad, npy_messages_quote_only_the_value, .init = setup, .fini = teardown)
{
    struct {
        const char *hdr;
        int rc;
        const char *want;
    } cases[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }          \n", SPRUCE_EDTYPE,
         "found '<f8'"},
        {"{'fortran_order': True, 'descr': '<f4', 'shape': (2, 3)}          \n", SPRUCE_EFORMAT,
         "found True"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }          \n", SPRUCE_ESHAPE,
         "found (6,)"},
        {"{'descr': '<f4', 'shape': (2, 3, 4), 'fortran_order': False}          \n", SPRUCE_ESHAPE,
         "found (2, 3, 4)"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = npy_file(cases[i].hdr, 24);
        const char *d;
        float *data;
        int64_t r, c;
        cr_assert_eq(spruce__npy_read(p, &data, &r, &c), cases[i].rc, "case %zu: %s", i, spruce_errdetail());
        d = spruce_errdetail();
        cr_assert(strstr(d, cases[i].want), "case %zu: '%s' not in: %s", i, cases[i].want, d);
        /* the message ends with the value: no '}', no padding, no newline */
        cr_assert(strcmp(d + strlen(d) - strlen(cases[i].want), cases[i].want) == 0, "case %zu: %s", i, d);
        free(p);
    }
}

Test(io_bad, npy_duplicate_and_unknown_keys_are_refused, .init = setup, .fini = teardown)
{
    const char *dup[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'shape': (3, 2), }\n",
        "{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
        "{'descr': '<f4', 'fortran_order': False, \"fortran_order\": True, 'shape': (2, 3)}\n",
    };
    size_t i;
    float *data;
    int64_t r, c;
    char *p;
    for (i = 0; i < sizeof dup / sizeof dup[0]; i++) {
        p = npy_file(dup[i], 24);
        cr_assert_eq(spruce__npy_read(p, &data, &r, &c), SPRUCE_EFORMAT, "case %zu", i);
        assert_detail_has(p, "duplicate key");
        free(p);
    }
    p = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}\n", 24);
    cr_assert_eq(spruce__npy_read(p, &data, &r, &c), SPRUCE_EFORMAT);
    assert_detail_has(p, "unexpected key 'extra'");
    free(p);
    /* the same header without the duplicate reads */
    p = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 24);
    cr_assert_eq(spruce__npy_read(p, &data, &r, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(r, 2);
    cr_assert_eq(c, 3);
    free(data);
    free(p);
}

/* ---- the command line -------------------------------------------------------------- */

Test(io_bad, the_cli_names_the_failure_not_input_output_error, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[9000], out[4096], *model = path2(dir, "m"), *d = path2(dir, "calib.u16");
    FILE *f;
    size_t n;
    if (!bin)
        cr_skip_test("SPRUCE_BIN not set (run through make check)");
    cr_assert_eq(mkdir(d, 0700), 0);
    snprintf(cmd, sizeof cmd, "%s synth %s --layers 1 >/dev/null 2>&1 && %s eval %s --data %s 2>&1", bin,
             model, bin, model, d);
    f = popen(cmd, "r");
    cr_assert_not_null(f);
    n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    cr_assert_neq(pclose(f), 0, "%s", out);
    cr_assert(strstr(out, "is a directory"), "%s", out);
    cr_assert(strstr(out, d), "%s", out);
    cr_assert_null(strstr(out, "input/output error"), "%s", out);
    free(model);
    free(d);
}
