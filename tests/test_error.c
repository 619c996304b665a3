/* test_error.c: the status code table and detail messages. */
#include <criterion/criterion.h>
#include <string.h>

#include "spruce_error.h"

Test(error, every_code_has_a_distinct_message)
{
    int codes[] = {
#define XX(name, value, msg) SPRUCE_##name,
        SPRUCE_ERRNO_MAP(XX)
#undef XX
    };
    size_t n = sizeof codes / sizeof codes[0], i, j;
    for (i = 0; i < n; i++) {
        cr_assert(codes[i] < 0);
        cr_assert_str_neq(spruce_strerror(codes[i]), "unknown error");
        for (j = i + 1; j < n; j++)
            cr_assert_str_neq(spruce_strerror(codes[i]), spruce_strerror(codes[j]));
    }
    cr_assert_str_eq(spruce_strerror(12345), "unknown error");
    cr_assert_str_eq(spruce_strerror(SPRUCE_OK), "success");
}

Test(error, detail_is_recorded_and_cleared)
{
    int rc = spruce__seterr(SPRUCE_ESHAPE, "tensor %s: expected (%d, %d)", "w", 2, 3);
    cr_assert_eq(rc, SPRUCE_ESHAPE);
    cr_assert_str_eq(spruce_errdetail(), "tensor w: expected (2, 3)");
    spruce_errclear();
    cr_assert_str_eq(spruce_errdetail(), "");
}
