/* test_tokens.c: token-id files (.u16, .u32, .txt), their errors, random ids. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spruce_tokens.h"
#include "tmpdir_testutil.h"

static void setup(void) { tmpdir_make("tokens"); }
static void teardown(void) { tmpdir_remove(); }

static const char *put(const char *name, const void *b, size_t n)
{
    static char p[4200];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    return p;
}

TestSuite(tokens, .init = setup, .fini = teardown);

Test(tokens, u16_u32_txt_load)
{
    uint32_t *ids;
    size_t n;
    const char *p = put("a.u16", "\x01\x00\xff\xff\x02\x01", 6);
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, 3);
    cr_assert(ids[0] == 1 && ids[1] == 65535 && ids[2] == 258);
    free(ids);
    p = put("a.u32", "\x01\x02\x03\x04\xff\xff\xff\xff", 8);
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert(ids[0] == 0x04030201u && ids[1] == 0xffffffffu);
    free(ids);
    p = put("a.txt", "1 2\n\t3\r\n  4000000000 \n0", 23);
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, 5);
    cr_assert(ids[0] == 1 && ids[1] == 2 && ids[2] == 3 && ids[3] == 4000000000u && ids[4] == 0);
    free(ids);
}

Test(tokens, bad_files_give_clear_errors)
{
    static const struct {
        const char *name, *bytes;
        size_t n;
        int code;
        const char *detail;
    } cases[] = {
        {"odd.u16", "\x01\x00\x02", 3, SPRUCE_EFORMAT, "expected a whole number of 2-byte ids, found 3 bytes"},
        {"odd.u32", "\x01\x00\x02\x00\x00\x00", 6, SPRUCE_EFORMAT, "whole number of 4-byte ids, found 6 bytes"},
        {"empty.u16", "", 0, SPRUCE_EFORMAT, "found an empty file"},
        {"empty.txt", " \n\t ", 4, SPRUCE_EFORMAT, "found none"},
        {"garbage.txt", "1 2\n3 x4 5", 10, SPRUCE_EFORMAT, "line 2: expected a decimal token id, found 'x4'"},
        {"glued.txt", "12abc 3", 7, SPRUCE_EFORMAT, "found '12abc'"},
        {"negative.txt", "-5", 2, SPRUCE_EFORMAT, "found '-5'"},
        {"big.txt", "1 5000000000", 12, SPRUCE_EFORMAT, "below 2^32, found '5000000000'"},
        {"ids.bin", "\x01\x00", 2, SPRUCE_EINVAL, "ending in .u16, .u32 or .txt"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t *ids = (uint32_t *)1;
        size_t n = 7;
        const char *p = put(cases[i].name, cases[i].bytes, cases[i].n);
        int rc = spruce_tokens_load(p, &ids, &n);
        cr_expect_eq(rc, cases[i].code, "%s: %d (%s)", cases[i].name, rc, spruce_errdetail());
        cr_expect(strstr(spruce_errdetail(), cases[i].detail) != NULL, "%s: '%s' lacks '%s'", cases[i].name,
                  spruce_errdetail(), cases[i].detail);
        cr_expect(strstr(spruce_errdetail(), cases[i].name) != NULL, "%s: file not named", cases[i].name);
        cr_expect_null(ids);
        cr_expect_eq(n, 0);
    }
    {
        uint32_t *ids;
        size_t n;
        char p[4200];
        snprintf(p, sizeof p, "%s/absent.u16", dir);
        cr_assert_eq(spruce_tokens_load(p, &ids, &n), SPRUCE_ENOTFOUND);
        cr_assert(strstr(spruce_errdetail(), "absent.u16"));
    }
}

Test(tokens, check_names_position_and_id)
{
    uint32_t ids[4] = {1, 5, 600, 700};
    cr_assert_eq(spruce_tokens_check(ids, 2, 512, "calib.u16"), 0);
    cr_assert_eq(spruce_tokens_check(ids, 4, 512, "calib.u16"), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "calib.u16: token 2:"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "512") && strstr(spruce_errdetail(), "found 600"), "%s",
              spruce_errdetail());
}

Test(tokens, save_load_roundtrip_every_format)
{
    const char *ext[] = {"u16", "u32", "txt"};
    uint32_t src[1000], *ids;
    size_t n, i, k;
    char p[4200];
    spruce_tokens_random(src, 1000, 50000, 3);
    src[0] = 0;
    src[1] = 49999;
    for (k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/t.%s", dir, ext[k]);
        cr_assert_eq(spruce_tokens_save(p, src, 1000), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_tokens_load(p, &ids, &n), 0, "%s", spruce_errdetail());
        cr_assert_eq(n, 1000);
        for (i = 0; i < n; i++)
            cr_assert_eq(ids[i], src[i]);
        free(ids);
    }
    src[3] = 70000;
    snprintf(p, sizeof p, "%s/big.u16", dir);
    cr_assert_eq(spruce_tokens_save(p, src, 1000), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "token 3") && strstr(spruce_errdetail(), "70000"));
    cr_assert_eq(access(p, F_OK), -1, "nothing written");
    snprintf(p, sizeof p, "%s/t.dat", dir);
    cr_assert_eq(spruce_tokens_save(p, src, 10), SPRUCE_EINVAL);
}

Test(tokens, random_ids_are_reproducible_and_in_range)
{
    static uint32_t a[160000], b[160000];
    size_t i, bins[16] = {0};
    spruce_tokens_random(a, 160000, 512, 11);
    spruce_tokens_random(b, 160000, 512, 11);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    spruce_tokens_random(b, 160000, 512, 12);
    cr_assert_neq(memcmp(a, b, sizeof a), 0);
    for (i = 0; i < 160000; i++) {
        cr_assert_lt(a[i], 512);
        bins[a[i] / 32]++;
    }
    for (i = 0; i < 16; i++) /* 10000 expected per bin; 5 standard deviations is 500 */
        cr_assert(bins[i] > 9500 && bins[i] < 10500, "bin %zu: %zu", i, bins[i]);
}

Test(tokens, fixture_files_load)
{
    const char *fx = getenv("SPRUCE_FIXTURES");
    char p[4096];
    uint32_t *ids;
    size_t n;
    snprintf(p, sizeof p, "%s/stories260k/calib.u16", fx ? fx : "");
    if (!fx || access(p, R_OK))
        cr_skip_test("fixture %s not found (set SPRUCE_FIXTURES)", p);
    cr_assert_eq(spruce_tokens_load(p, &ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, 128 * 256);
    cr_assert_eq(spruce_tokens_check(ids, n, 512, p), 0);
    cr_assert_eq(ids[0], 1, "each sequence starts with BOS");
    cr_assert_eq(ids[256], 1);
    free(ids);
}
