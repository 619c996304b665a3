/* decode_testutil.h: the check that greedy ids cannot depend on which format
 * `auto` picks per layer, shared by the demo and `spruce run` tests. */
#ifndef SPRUCE_DECODE_TESTUTIL_H
#define SPRUCE_DECODE_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "spruce_decode.h"
#include "spruce_model.h"

/* `auto` picks each layer's format by timing it, so the ids it generates equal
 * dense's whatever it picks when, at every step of greedy decoding after the
 * prompt, the most likely token leads the next one by more than twice the
 * largest difference any format makes to a logit.  Checked on the model in
 * dir with every format of modes[0..nmodes) forced (modes[0] the reference),
 * feeding prompt[0..nprompt) and then steps greedy tokens. */
static inline void check_greedy_margin(const char *dir, const uint32_t *prompt, int nprompt,
                                       int steps, const spruce_decode_mode *modes, int nmodes)
{
    spruce_model *m = NULL;
    spruce_decoder *d[8];
    float *lg[8];
    double margin = INFINITY, diff = 0;
    uint32_t id = prompt[0];
    int vocab, k, t, j;
    cr_assert(nmodes >= 2 && nmodes <= 8 && nprompt >= 1);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(m)->vocab_size;
    for (k = 0; k < nmodes; k++) {
        cr_assert_eq(spruce_decoder_create(m, nprompt + steps + 1, modes[k], &d[k]), 0, "%s",
                     spruce_errdetail());
        lg[k] = malloc(sizeof *lg[k] * (size_t)vocab);
        cr_assert_not_null(lg[k]);
    }
    for (t = 0; t < nprompt - 1 + steps; t++) {
        int best = 0, second = -1;
        for (k = 0; k < nmodes; k++)
            cr_assert_eq(spruce_decoder_step(d[k], id, lg[k]), 0, "%s", spruce_errdetail());
        if (t + 1 < nprompt) { /* still reading the prompt */
            id = prompt[t + 1];
            continue;
        }
        for (j = 1; j < vocab; j++)
            if (lg[0][j] > lg[0][best]) {
                second = best;
                best = j;
            } else if (second < 0 || lg[0][j] > lg[0][second]) {
                second = j;
            }
        if (lg[0][best] - lg[0][second] < margin)
            margin = lg[0][best] - lg[0][second];
        for (k = 1; k < nmodes; k++)
            for (j = 0; j < vocab; j++)
                if (fabs(lg[k][j] - lg[0][j]) > diff)
                    diff = fabs(lg[k][j] - lg[0][j]);
        id = (uint32_t)best;
    }
    cr_assert(2 * diff < margin, "greedy ids could depend on the formats auto picks: the "
              "smallest lead of the top token is %g, a format moves a logit by up to %g",
              margin, diff);
    for (k = 0; k < nmodes; k++) {
        spruce_decoder_free(d[k]);
        free(lg[k]);
    }
    spruce_model_free(m);
}

#endif
