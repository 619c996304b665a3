/* test_gemma.c: Gemma 2 and Gemma 3 (text) part by part, each against a
 * direct scalar computation of the transformers definition
 * (modeling_gemma2.py: Gemma2RMSNorm, Gemma2MLP, eager_attention_forward,
 * Gemma2Model's normalizer, Gemma2ForCausalLM's final soft-cap;
 * masking_utils.py: sliding_window_overlay; configuration_gemma2.py and
 * configuration_gemma3.py: the defaults and the layer pattern).  The whole
 * forward against the golden logits of the families fixtures is in
 * test_families.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "families_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

static void parse_ok(const char *json, spruce_config *c)
{
    cr_assert_eq(spruce_config_parse(json, "test", c), 0, "%s: %s", json, spruce_errdetail());
}

static void parse_refused(const char *json, int code, const char *what)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse(json, "test", &c), code, "%s", json);
    cr_assert(strstr(spruce_errdetail(), what), "'%s' does not name %s", spruce_errdetail(),
              what);
}

#define GEMMA_CFG(type, extra)                                                          \
    "{\"model_type\": \"" type "\", \"hidden_size\": 64, \"intermediate_size\": 96, "   \
    "\"num_hidden_layers\": 6, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, " \
    "\"vocab_size\": 64, \"max_position_embeddings\": 256" extra "}"

/* A reproducible value in [-a, a). */
static float rnd(uint32_t *s, float a)
{
    *s = *s * 1664525u + 1013904223u;
    return a * (2.0f * (float)(*s >> 8) / 16777216.0f - 1.0f);
}

/* ---- the pieces -------------------------------------------------------------- */

Test(gemma, norm_applies_one_plus_w)
{
    enum { N = 48, T = 3 };
    float x[T * N], w[N], y[T * N];
    uint32_t s = 1;
    double worst = 0;
    int t, j;
    for (j = 0; j < N; j++)
        w[j] = rnd(&s, 0.5f) + 0.25f;   /* Gemma's stored weights, around 0 */
    for (j = 0; j < T * N; j++)
        x[j] = rnd(&s, 3.0f);
    spruce__rmsnorm_off(y, x, w, 1.0f, T, N, 1e-6);
    for (t = 0; t < T; t++) {
        double ss = 0;
        for (j = 0; j < N; j++)
            ss += (double)x[t * N + j] * x[t * N + j];
        for (j = 0; j < N; j++) {
            double ref = x[t * N + j] / sqrt(ss / N + 1e-6) * (1.0 + w[j]);
            worst = fmax(worst, fabs(y[t * N + j] - ref) / (fabs(ref) + 1e-3));
        }
    }
    cr_assert(worst < 1e-5, "(1 + w) norm: relative error %g", worst);
}

Test(gemma, gelu_tanh_and_the_gated_product)
{
    const double k = sqrt(2.0 / M_PI);
    float g[9], u[9], xs[9] = {-6.0f, -3.0f, -1.0f, -0.3f, 0.0f, 0.3f, 1.0f, 2.5f, 8.0f};
    int i;
    for (i = 0; i < 9; i++) {
        double x = xs[i], ref = 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
        cr_assert(fabs(spruce__gelu_tanh(xs[i]) - ref) < 1e-6 * (1 + fabs(ref)),
                  "gelu_tanh(%g) = %g, expected %g", x, spruce__gelu_tanh(xs[i]), ref);
        g[i] = xs[i];
        u[i] = 0.5f + (float)i;
    }
    spruce__geglu(g, u, 9);
    for (i = 0; i < 9; i++)
        cr_assert(fabs(g[i] - spruce__gelu_tanh(xs[i]) * u[i]) < 1e-6 * (1 + fabs(g[i])));
    /* not the exact (erf) gelu: they differ by about 1e-3 near x = -3 */
    cr_assert(fabs(spruce__gelu_tanh(-3.0f) - (-3.0 * 0.5 * erfc(3.0 / sqrt(2.0)))) > 1e-4);
}

Test(gemma, softcap_is_tanh_of_the_ratio)
{
    float x[5] = {-100.0f, -5.0f, 0.0f, 2.0f, 40.0f}, y[5];
    int i;
    memcpy(y, x, sizeof x);
    spruce__softcap(y, 5, 8.0f);
    for (i = 0; i < 5; i++) {
        double ref = tanh(x[i] / 8.0) * 8.0;
        cr_assert(fabs(y[i] - ref) < 1e-5, "cap(%g) = %g, expected %g", x[i], y[i], ref);
    }
    cr_assert(y[0] >= -8.0f && y[4] <= 8.0f);
}

/* The vectorized loops over whole arrays (one thread below 32768 elements,
 * several above) against the double-precision definitions, element by
 * element, at every alignment and length remainder, with NaN (stays NaN) and
 * infinities (saturate). */
Test(gemma, array_loops_against_the_double_definitions)
{
    const double k = sqrt(2.0 / M_PI);
    static const size_t ns[] = {1, 3, 7, 8, 9, 17, 1000, 32767, 32768, 100003};
    size_t t, i, off;
    for (t = 0; t < sizeof ns / sizeof ns[0]; t++)
        for (off = 0; off < 3; off++) {
            size_t n = ns[t];
            float *g = malloc(sizeof *g * (n + 3)), *u = malloc(sizeof *u * (n + 3));
            float *c = malloc(sizeof *c * (n + 3));
            cr_assert(g && u && c);
            for (i = 0; i < n; i++) {
                /* -12 .. 12 and beyond, with a few specials */
                float x = (float)(((long)(i * 2654435761u % 2000003u)) - 1000001) * 1.3e-5f;
                if (i % 997 == 5)
                    x = NAN;
                else if (i % 991 == 6)
                    x = i % 2 ? INFINITY : -INFINITY;
                g[off + i] = x;
                u[off + i] = 0.25f + (float)(i % 7);
                c[off + i] = x * 4.0f;
            }
            spruce__geglu(g + off, u + off, n);
            spruce__softcap(c + off, n, 30.0f);
            for (i = 0; i < n; i++) {
                float x = (float)(((long)(i * 2654435761u % 2000003u)) - 1000001) * 1.3e-5f;
                double xd, ge, ce;
                if (i % 997 == 5) {
                    cr_assert(isnan(g[off + i]) && isnan(c[off + i]), "n %zu, element %zu: "
                              "NaN gave %g, %g", n, i, g[off + i], c[off + i]);
                    continue;
                }
                if (i % 991 == 6) {
                    cr_assert_eq(c[off + i], i % 2 ? 30.0f : -30.0f, "n %zu: cap(+-inf)", n);
                    continue;
                }
                xd = x;
                ge = 0.5 * xd * (1.0 + tanh(k * (xd + 0.044715 * xd * xd * xd))) * u[off + i];
                ce = tanh(4.0 * xd / 30.0) * 30.0;
                /* tanh's absolute error (4e-7, tanh_rational) scaled by 0.5 x u, where
                 * 1 + tanh cancels for negative x */
                cr_assert(fabs(g[off + i] - ge) <= 2.5e-7 * fabs(xd) * u[off + i] +
                                                    2e-6 * (1 + fabs(ge)), "n %zu, element %zu: "
                          "geglu(%g) = %g, expected %g", n, i, x, g[off + i], ge);
                cr_assert(fabs(c[off + i] - ce) <= 2e-5 * (1 + fabs(ce)), "n %zu, element %zu: "
                          "softcap(%g) = %g, expected %g", n, i, 4 * x, c[off + i], ce);
            }
            free(g);
            free(u);
            free(c);
        }
}

/* ---- attention: scale, soft-cap, window against a scalar reference ------------ */

enum { AH = 2, AKV = 1, AD = 8 };

/* out (T, H * d): softmax over p - window < j <= p (window 0: j <= p) of
 * cap(scale q_p . k_j), times v_j; q (T, H d), k, v (T, KV d). */
static void attention_ref(const float *q, const float *k, const float *v, int T, double scale,
                          double cap, int window, double *out)
{
    int p, h, j, e;
    for (p = 0; p < T; p++)
        for (h = 0; h < AH; h++) {
            int g = h / (AH / AKV), lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
            double s[64], mx = -INFINITY, sum = 0;
            for (j = lo; j <= p; j++) {
                double acc = 0;
                for (e = 0; e < AD; e++)
                    acc += (double)q[(p * AH + h) * AD + e] * k[(j * AKV + g) * AD + e];
                acc *= scale;
                s[j] = cap > 0 ? tanh(acc / cap) * cap : acc;
                mx = fmax(mx, s[j]);
            }
            for (j = lo; j <= p; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (e = 0; e < AD; e++) {
                double acc = 0;
                for (j = lo; j <= p; j++)
                    acc += s[j] / sum * v[(j * AKV + g) * AD + e];
                out[(p * AH + h) * AD + e] = acc;
            }
        }
}

/* Both attention paths (rows with a cache, BLAS) for T tokens with opts a. */
static void attention_both(const float *q, const float *k, const float *v, int T,
                           const spruce__attn *a, float *rows, float *blas)
{
    spruce__kv kv;
    float *scratch, *S;
    kv.ld = spruce__kv_ld((size_t)T);
    kv.kt = calloc((size_t)AKV * AD * kv.ld, sizeof(float));
    kv.vt = calloc((size_t)AKV * AD * kv.ld, sizeof(float));
    scratch = calloc(kv.ld, sizeof(float));
    S = calloc((size_t)T * T, sizeof(float));
    spruce__kv_store(&kv, k, v, 1, T, 0, AKV, AD);
    spruce__attention_rows_opts(&kv, q, rows, 1, T, 0, AH, AKV, AD, a, scratch, 1);
    spruce__attention_blas_opts(q, k, v, blas, 1, T, AH, AKV, AD, a, S);
    free(kv.kt);
    free(kv.vt);
    free(scratch);
    free(S);
}

/* Token-by-token as the decoder runs: position p attends its cache. */
static void attention_steps(const float *q, const float *k, const float *v, int T,
                            const spruce__attn *a, float *out)
{
    spruce__kv kv;
    float *scratch;
    int p;
    kv.ld = spruce__kv_ld((size_t)T);
    kv.kt = calloc((size_t)AKV * AD * kv.ld, sizeof(float));
    kv.vt = calloc((size_t)AKV * AD * kv.ld, sizeof(float));
    scratch = calloc(kv.ld, sizeof(float));
    for (p = 0; p < T; p++) {
        spruce__kv_store(&kv, k + p * AKV * AD, v + p * AKV * AD, 1, 1, p, AKV, AD);
        spruce__attention_rows_opts(&kv, q + p * AH * AD, out + p * AH * AD, 1, 1, p, AH, AKV,
                                    AD, a, scratch, 1);
    }
    free(kv.kt);
    free(kv.vt);
    free(scratch);
}

static double row_diff(const float *a, const double *ref, int p)
{
    double d = 0;
    int e;
    for (e = 0; e < AH * AD; e++)
        d = fmax(d, fabs(a[p * AH * AD + e] - ref[p * AH * AD + e]));
    return d;
}

/* A window of W tokens includes the current one: at position W - 1 every key
 * is still seen, at W key 0 has left, at W + 1 keys 0 and 1. */
Test(gemma, sliding_window_exact_at_the_boundary)
{
    enum { W = 13, T = W + 2 };
    float q[T * AH * AD], k[T * AKV * AD], v[T * AKV * AD];
    float rows[T * AH * AD], blas[T * AH * AD], steps[T * AH * AD];
    double ref[T * AH * AD], full[T * AH * AD], drop1[T * AH * AD];
    spruce__attn a;
    uint32_t s = 7;
    int i, p;
    for (i = 0; i < T * AH * AD; i++)
        q[i] = rnd(&s, 1.5f);
    for (i = 0; i < T * AKV * AD; i++) {
        k[i] = rnd(&s, 1.5f);
        v[i] = rnd(&s, 1.0f);
    }
    spruce__attn_default(&a, AD);
    a.scale = (float)(1.0 / sqrt(24.0));   /* query_pre_attn_scalar 24 */
    a.softcap = 5.0f;
    a.window = W;
    attention_both(q, k, v, T, &a, rows, blas);
    attention_steps(q, k, v, T, &a, steps);
    attention_ref(q, k, v, T, a.scale, 5.0, W, ref);
    attention_ref(q, k, v, T, a.scale, 5.0, 0, full);
    attention_ref(q, k, v, T, a.scale, 5.0, W - 1, drop1);   /* one key fewer */
    for (p = 0; p < T; p++) {
        cr_assert(row_diff(rows, ref, p) < 1e-5, "rows, position %d: %g", p,
                  row_diff(rows, ref, p));
        cr_assert(row_diff(blas, ref, p) < 1e-5, "blas, position %d: %g", p,
                  row_diff(blas, ref, p));
        cr_assert(row_diff(steps, ref, p) < 1e-5, "cached steps, position %d: %g", p,
                  row_diff(steps, ref, p));
    }
    /* the boundary: the reference itself differs where the window acts */
    cr_assert(row_diff(rows, full, W - 1) < 1e-5, "position W-1 sees every key");
    cr_assert(row_diff(rows, drop1, W - 1) > 1e-4, "a window of W-1 would differ at W-1");
    cr_assert(row_diff(rows, full, W) > 1e-4, "position W must not see key 0");
    cr_assert(row_diff(rows, full, W + 1) > 1e-4, "position W+1 must not see keys 0, 1");
}

Test(gemma, attention_softcap_before_the_softmax)
{
    enum { T = 6 };
    float q[T * AH * AD], k[T * AKV * AD], v[T * AKV * AD], rows[T * AH * AD],
        blas[T * AH * AD];
    double ref[T * AH * AD], plain[T * AH * AD];
    spruce__attn a;
    uint32_t s = 3;
    int i, p;
    for (i = 0; i < T * AH * AD; i++)
        q[i] = rnd(&s, 4.0f);   /* large scores: the cap matters */
    for (i = 0; i < T * AKV * AD; i++) {
        k[i] = rnd(&s, 4.0f);
        v[i] = rnd(&s, 1.0f);
    }
    spruce__attn_default(&a, AD);
    a.softcap = 2.0f;
    attention_both(q, k, v, T, &a, rows, blas);
    attention_ref(q, k, v, T, a.scale, 2.0, 0, ref);
    attention_ref(q, k, v, T, a.scale, 0, 0, plain);
    for (p = 0; p < T; p++) {
        cr_assert(row_diff(rows, ref, p) < 1e-5, "rows %d: %g", p, row_diff(rows, ref, p));
        cr_assert(row_diff(blas, ref, p) < 1e-5, "blas %d: %g", p, row_diff(blas, ref, p));
    }
    cr_assert(row_diff(rows, plain, T - 1) > 1e-3, "the cap changed nothing");
}

/* ---- the config ------------------------------------------------------------------ */

Test(gemma, gemma2_defaults)
{
    spruce_config c;
    int i;
    parse_ok(GEMMA_CFG("gemma2", ""), &c);
    cr_assert_eq(c.head_dim, 256);
    cr_assert_eq(c.tie_word_embeddings, 1);
    cr_assert_eq(c.norm_plus_one, 1);
    cr_assert_eq(c.act, SPRUCE_ACT_GELU_TANH);
    cr_assert_float_eq(c.attn_scale, 1.0 / 16.0, 1e-15);   /* 256^-0.5 */
    cr_assert_float_eq(c.attn_softcap, 50.0, 0);
    cr_assert_float_eq(c.final_softcap, 30.0, 0);
    cr_assert_float_eq(c.embed_scale, 8.0f, 0);
    cr_assert_float_eq(c.rope_theta, 10000.0, 0);
    cr_assert_eq(c.sliding_window, 4096);
    cr_assert_float_eq(c.rope_local_theta, 0.0, 0);
    for (i = 0; i < 6; i++)   /* Gemma2Attention: not layer_idx % 2 slides */
        cr_assert_eq(spruce_config_layer_window(&c, i), i % 2 ? 0 : 4096, "layer %d", i);
    /* null: no cap; the config's values win */
    parse_ok(GEMMA_CFG("gemma2", ", \"attn_logit_softcapping\": null, "
                       "\"final_logit_softcapping\": 8.0, \"query_pre_attn_scalar\": 24, "
                       "\"sliding_window\": 16, \"tie_word_embeddings\": false"), &c);
    cr_assert_float_eq(c.attn_softcap, 0.0, 0);
    cr_assert_float_eq(c.final_softcap, 8.0, 0);
    cr_assert_float_eq(c.attn_scale, 1.0 / sqrt(24.0), 1e-15);
    cr_assert_eq(spruce_config_layer_window(&c, 2), 16);
    cr_assert_eq(c.tie_word_embeddings, 0);
    /* sqrt(hidden) rounded to float32, as torch.tensor(hidden ** 0.5) is */
    parse_ok("{\"model_type\": \"gemma2\", \"hidden_size\": 3072, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"max_position_embeddings\": 256}", &c);
    cr_assert_eq(c.embed_scale, (float)sqrt(3072.0));
}

Test(gemma, gemma3_defaults_and_layer_pattern)
{
    spruce_config c;
    int i;
    parse_ok(GEMMA_CFG("gemma3_text", ", \"attn_logit_softcapping\": 50.0"), &c);
    cr_assert_eq(c.head_dim, 256);
    cr_assert_eq(c.qk_norm, 1);
    cr_assert_float_eq(c.attn_softcap, 0.0, 0);   /* Gemma3Attention never applies it */
    cr_assert_float_eq(c.final_softcap, 0.0, 0);
    cr_assert_float_eq(c.rope_theta, 1e6, 0);
    cr_assert_float_eq(c.rope_local_theta, 10000.0, 0);
    for (i = 0; i < 6; i++)   /* sliding_window_pattern 6: layer 5 full */
        cr_assert_eq(spruce_config_layer_window(&c, i), i == 5 ? 0 : 4096, "layer %d", i);
    parse_ok(GEMMA_CFG("gemma3_text", ", \"sliding_window_pattern\": 3, \"sliding_window\": 16,"
                       " \"final_logit_softcapping\": 30.0"), &c);
    for (i = 0; i < 6; i++)
        cr_assert_eq(spruce_config_layer_window(&c, i), (i + 1) % 3 ? 16 : 0, "layer %d", i);
    cr_assert_float_eq(c.final_softcap, 30.0, 0);
    /* layer_types wins over the pattern */
    parse_ok(GEMMA_CFG("gemma3_text", ", \"sliding_window_pattern\": 3, \"layer_types\": ["
                       "\"sliding_attention\", \"full_attention\", \"sliding_attention\", "
                       "\"full_attention\", \"sliding_attention\", \"full_attention\"]"), &c);
    for (i = 0; i < 6; i++)
        cr_assert_eq(spruce_config_layer_window(&c, i), i % 2 ? 0 : 4096, "layer %d", i);
    parse_ok(GEMMA_CFG("gemma2", ", \"layer_types\": [\"sliding_attention\", "
                       "\"sliding_attention\", \"sliding_attention\", \"sliding_attention\", "
                       "\"sliding_attention\", \"sliding_attention\"]"), &c);
    for (i = 0; i < 6; i++)
        cr_assert_eq(spruce_config_layer_window(&c, i), 4096, "layer %d", i);
    /* any order, as Gemma2DecoderLayer reads config.layer_types[layer_idx] */
    parse_ok(GEMMA_CFG("gemma2", ", \"layer_types\": [\"full_attention\", "
                       "\"sliding_attention\", \"full_attention\", \"full_attention\", "
                       "\"sliding_attention\", \"sliding_attention\"]"), &c);
    for (i = 0; i < 6; i++)
        cr_assert_eq(spruce_config_layer_window(&c, i), (i == 1 || i >= 4) ? 4096 : 0,
                     "layer %d", i);
}

Test(gemma, what_is_not_implemented_is_refused)
{
    parse_refused(GEMMA_CFG("gemma2", ", \"hidden_activation\": \"relu\""), SPRUCE_EUNSUPPORTED,
                  "hidden_activation 'relu'");
    parse_refused(GEMMA_CFG("gemma3_text", ", \"hidden_activation\": \"gelu\""),
                  SPRUCE_EUNSUPPORTED, "gelu_pytorch_tanh");
    parse_refused(GEMMA_CFG("gemma3_text", ", \"use_bidirectional_attention\": true"),
                  SPRUCE_EUNSUPPORTED, "use_bidirectional_attention");
    parse_refused(GEMMA_CFG("gemma3_text", ", \"rope_parameters\": {\"full_attention\": "
                            "{\"rope_type\": \"default\", \"rope_theta\": 1e6}}"),
                  SPRUCE_EUNSUPPORTED, "rope_parameters");
    parse_refused(GEMMA_CFG("gemma2", ", \"sliding_window\": null"), SPRUCE_EUNSUPPORTED,
                  "sliding_window");
    parse_refused(GEMMA_CFG("gemma2", ", \"layer_types\": [\"sliding_attention\"]"),
                  SPRUCE_EFORMAT, "layer_types");
    parse_refused(GEMMA_CFG("gemma2", ", \"layer_types\": [\"chunked_attention\", "
                            "\"full_attention\", \"sliding_attention\", \"full_attention\", "
                            "\"sliding_attention\", \"full_attention\"]"),
                  SPRUCE_EFORMAT, "layer_types[0]");
    parse_refused(GEMMA_CFG("gemma2", ", \"query_pre_attn_scalar\": 0"), SPRUCE_EFORMAT,
                  "query_pre_attn_scalar");
    parse_refused(GEMMA_CFG("gemma2", ", \"attn_logit_softcapping\": -1"), SPRUCE_EFORMAT,
                  "attn_logit_softcapping");
}

/* ---- the tensors ------------------------------------------------------------------ */

Test(gemma, tensor_table_and_linear_layers)
{
    spruce_config c;
    spruce_family_tensor t;
    size_t i;
    int post = 0, pre = 0, qn = 0, lin = 0;
    parse_ok(GEMMA_CFG("gemma3_text", ", \"head_dim\": 16"), &c);
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++) {
        cr_assert(!strstr(t.name, "lm_head"), "tied by default: no head");
        if (strstr(t.name, "post_attention_layernorm") ||
            strstr(t.name, "post_feedforward_layernorm")) {
            post++;
            cr_assert_eq(t.role, SPRUCE_TENSOR_NORM);
            cr_assert_eq(t.shape[0], 64);
        }
        pre += strstr(t.name, "pre_feedforward_layernorm") != NULL;
        qn += strstr(t.name, "q_norm") != NULL;
        if (t.role == SPRUCE_TENSOR_LINEAR) {
            lin++;
            cr_assert_eq(spruce_family_is_linear("gemma3_text", t.name), 1, "%s", t.name);
        } else {
            cr_assert_eq(spruce_family_is_linear("gemma3_text", t.name), 0, "%s", t.name);
        }
    }
    cr_assert_eq(post, 12);
    cr_assert_eq(pre, 6);
    cr_assert_eq(qn, 6);
    cr_assert_eq(lin, 42);
    cr_assert_eq(spruce_family_is_linear("gemma2", "model.layers.0.mlp.gate_proj.weight"), 1);
    cr_assert_eq(spruce_family_is_linear("gemma2", "model.embed_tokens.weight"), 0);
    cr_assert_eq(spruce_family_is_linear("gemma2", "model.norm.weight"), 0);
}

/* ---- the embedding on the fixture --------------------------------------------------- */

Test(gemma, embedding_times_sqrt_hidden)
{
    const char *root = getenv("SPRUCE_FIXTURES");
    char dir[1024];
    spruce_model *m = NULL;
    const spruce_tensor *e;
    float *raw, x[3 * 64];
    uint32_t ids[3] = {0, 17, 255};
    int t, j;
    snprintf(dir, sizeof dir, "%s/families/gemma2", root ? root : "");
    if (!root || !exists(dir)) {
        cr_skip_test("families fixture gemma2 not found: set SPRUCE_FIXTURES to the "
                     "directory holding families/gemma2");
        return;
    }
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->hidden_size, 64);
    e = spruce_ckpt_find(spruce_model_ckpt(m), "model.embed_tokens.weight");
    cr_assert_not_null(e);
    raw = malloc(sizeof(float) * (size_t)spruce_tensor_numel(e));
    cr_assert_eq(spruce_tensor_read_f32(e, raw), 0);
    cr_assert_eq(spruce_model_embed(m, ids, 3, x), 0);
    for (t = 0; t < 3; t++)
        for (j = 0; j < 64; j++)
            cr_assert_eq(x[t * 64 + j], raw[(size_t)ids[t] * 64 + j] * 8.0f, "id %u col %d",
                         ids[t], j);
    free(raw);
    spruce_model_free(m);
}

/* Gemma2Model's normalizer is torch.tensor(hidden_size ** 0.5,
 * dtype=hidden_states.dtype): for hidden 96, sqrt(96) = 9.79796 is 9.8125 in
 * bf16 (8 significant bits: 157 / 16), 9.796875 in f16 (11 bits: 1254 / 128)
 * and float32's nearest in f32.  Each checkpoint dtype's embedding is its
 * stored values times that constant. */
Test(gemma, embedding_scale_rounded_to_the_checkpoint_dtype)
{
    static const struct {
        spruce_dtype dt;
        float scale;
    } cases[] = {{SPRUCE_DTYPE_BF16, 9.8125f}, {SPRUCE_DTYPE_F16, 9.796875f},
                 {SPRUCE_DTYPE_F32, 9.797958971f}};
    uint32_t ids[3] = {0, 5, 127};
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        spruce_synth_config sc;
        spruce_synth_family fam;
        spruce_model *m = NULL;
        const spruce_tensor *e;
        char *d = tmp_dir();
        float *raw, x[3 * 96];
        int t, j;
        spruce_synth_defaults(&sc);
        sc.hidden = 96;
        sc.heads = 4;
        sc.kv_heads = 2;
        sc.intermediate = 128;
        sc.layers = 1;
        sc.vocab = 128;
        sc.max_position = 64;
        sc.dtype = cases[k].dt;
        spruce_synth_family_defaults(&fam);
        fam.model_type = "gemma2";
        fam.head_dim = 24;
        cr_assert_eq(spruce_synth_write_family(d, &sc, &fam, 1), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
        e = spruce_ckpt_find(spruce_model_ckpt(m), "model.embed_tokens.weight");
        cr_assert(e && e->dtype == cases[k].dt);
        raw = malloc(sizeof(float) * (size_t)spruce_tensor_numel(e));
        cr_assert_eq(spruce_tensor_read_f32(e, raw), 0);
        cr_assert_eq(spruce_model_embed(m, ids, 3, x), 0);
        for (t = 0; t < 3; t++)
            for (j = 0; j < 96; j++)
                cr_assert_eq(x[t * 96 + j], raw[(size_t)ids[t] * 96 + j] * cases[k].scale,
                             "dtype %d: id %u col %d: %.9g, stored %.9g", (int)cases[k].dt, ids[t],
                             j, (double)x[t * 96 + j], (double)raw[(size_t)ids[t] * 96 + j]);
        free(raw);
        spruce_model_free(m);
        rm_tree(d);
        free(d);
    }
}

/* ---- synth --family gemma2 | gemma3 --------------------------------------------------- */

/* A random checkpoint of the family opens with Gemma's config, holds exactly
 * the family table's tensors (tied: no head), and over a sequence longer than
 * its window the cached decoder and both attention paths give the forward's
 * logits. */
static void check_synth(const char *type, int sliding_layer1)
{
    enum { T = 40 };
    spruce_synth_config sc;
    spruce_synth_family fam;
    spruce_model *m = NULL;
    spruce_decoder *dec = NULL;
    const spruce_config *c;
    const spruce_ckpt *ck;
    char *d = tmp_dir();
    uint32_t ids[T];
    float *fw, *fb, *lg;
    int64_t total = 0;
    int i, t, V;
    double worst = 0, wb = 0;
    spruce_synth_defaults(&sc);
    sc.hidden = 64;
    sc.heads = 4;
    sc.kv_heads = 2;
    sc.intermediate = 96;
    sc.layers = 3;
    sc.vocab = 128;
    sc.max_position = 64;   /* window 16 */
    spruce_synth_family_defaults(&fam);
    fam.model_type = type;
    fam.head_dim = 32;
    cr_assert_eq(spruce_synth_write_family(d, &sc, &fam, 1), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_str_eq(c->model_type, type);
    cr_assert_eq(c->tie_word_embeddings, 1);
    cr_assert_eq(c->norm_plus_one, 1);
    cr_assert_eq(c->head_dim, 32);
    cr_assert_eq(spruce_config_layer_window(c, 0), 16);
    cr_assert_eq(spruce_config_layer_window(c, 1), sliding_layer1 ? 16 : 0);
    ck = spruce_model_ckpt(m);
    cr_assert_null(spruce_ckpt_find(ck, "lm_head.weight"));
    for (i = 0; i < spruce_ckpt_count(ck); i++)
        total += spruce_tensor_numel(spruce_ckpt_tensor_at(ck, i));
    cr_assert_eq(spruce_synth_family_nparams(&sc, &fam), total);
    V = c->vocab_size;
    spruce_tokens_random(ids, T, (uint32_t)V, 5);
    fw = malloc(sizeof(float) * T * V);
    fb = malloc(sizeof(float) * T * V);
    lg = malloc(sizeof(float) * V);
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_ROWS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, T, fw), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_BLAS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, T, fb), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(m, T, SPRUCE_DECODE_DENSE, &dec), 0);
    for (t = 0; t < T; t++) {
        cr_assert_eq(spruce_decoder_step(dec, ids[t], lg), 0, "%s", spruce_errdetail());
        worst = fmax(worst, max_abs_diff(lg, fw + (size_t)t * V, (size_t)V));
    }
    wb = max_abs_diff(fb, fw, (size_t)T * V);
    cr_assert(worst < 1e-4, "%s: decoder %g from the forward", type, worst);
    cr_assert(wb < 1e-4, "%s: BLAS attention %g from the rows", type, wb);
    spruce_decoder_free(dec);
    free(fw);
    free(fb);
    free(lg);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

Test(gemma, synth_gemma2) { check_synth("gemma2", 0); }
Test(gemma, synth_gemma3) { check_synth("gemma3_text", 0); }   /* pattern 2 below 6 layers */

/* ---- the memory estimate covers Gemma's shapes ---------------------------------------- */

/* Gemma 2 2B's shapes: a vocabulary of 256000 (tied: counted once), head_dim
 * 256 with 8 heads, so o's input is 2048 wide beside hidden 2304. */
Test(gemma, memory_estimate_covers_gemma_shapes)
{
    spruce_config c;
    spruce_family_tensor t;
    double block = 0, qd, V, h, need;
    size_t i;
    parse_ok("{\"model_type\": \"gemma2\", \"hidden_size\": 2304, \"intermediate_size\": 9216, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, "
             "\"num_key_value_heads\": 4, \"vocab_size\": 256000, "
             "\"max_position_embeddings\": 8192}", &c);
    cr_assert_eq(c.head_dim, 256);
    qd = (double)spruce_dim_of(&c, SPRUCE_DIM_Q);
    V = c.vocab_size;
    h = c.hidden_size;
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++)
        if (t.layer == 0)
            block += (double)t.shape[0] * (t.ndim == 2 ? (double)t.shape[1] : 1.0);
    /* the embedding is read by rows from the file and the head never
     * converted: a block, o's Hessian and the activations, not V x h */
    need = 4.0 * (block + qd * qd + 128.0 * 2048 * h);
    cr_assert(spruce_pipeline_memory(&c, 128, 2048) >= need,
              "estimate %g B; a block, o's Hessian and the activations alone "
              "are %g B", spruce_pipeline_memory(&c, 128, 2048), need);
    cr_assert(spruce_pipeline_memory(&c, 128, 2048) < need + 4.0 * V * h,
              "estimate %g B counts a float32 embedding (%g B)",
              spruce_pipeline_memory(&c, 128, 2048), 4.0 * V * h);
}
