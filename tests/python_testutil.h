/* python_testutil.h: find a Python 3 for the tests that check spruce's files
 * with a reader written in Python (numpy, h5py).  A pyenv shim may shadow
 * Debian's python3, whose packages install-deps provides, so the candidates
 * are $SPRUCE_PYTHON, $PYTHON3, python3 on PATH, then /usr/bin/python3. */
#ifndef SPRUCE_PYTHON_TESTUTIL_H
#define SPRUCE_PYTHON_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>

/* The first candidate that imports `modules` ("numpy" or "h5py, numpy"), or
 * NULL when none does. */
static inline const char *find_python_with(const char *modules)
{
    const char *cands[] = {getenv("SPRUCE_PYTHON"), getenv("PYTHON3"), "python3",
                           "/usr/bin/python3"};
    char cmd[512];
    size_t i;
    for (i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (!cands[i] || !*cands[i])
            continue;
        snprintf(cmd, sizeof cmd, "%s -c 'import %s' >/dev/null 2>&1", cands[i], modules);
        if (system(cmd) == 0)
            return cands[i];
    }
    return NULL;
}

#endif
