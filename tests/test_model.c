/* test_model.c: config.json, the family table, and the block forward against a
 * double-precision reference (the stories260k checkpoint and decoding are in
 * test_stories.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_model.h"
#include "spruce_family.h"
#include "spruce_pipeline.h"
#include "spruce_decode.h"
#include "spruce_tokens.h"

/* ---- config.json ------------------------------------------------------------- */

#define MINI "\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, " \
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"vocab_size\": 512, "    \
             "\"max_position_embeddings\": 256"

Test(config, defaults_follow_transformers)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse("{" MINI "}", "mini.json", &c), 0, "%s", spruce_errdetail());
    cr_assert_str_eq(c.model_type, "llama");
    cr_assert_eq(c.num_key_value_heads, 8);
    cr_assert_eq(c.head_dim, 8);
    cr_assert_float_eq(c.rope_theta, 10000.0, 1e-9);
    cr_assert_eq(c.tie_word_embeddings, 0);
    cr_assert_eq(c.qkv_bias, 0);
    cr_assert_eq(c.sliding_window, 0);
}

Test(config, options_are_read)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse("{" MINI ", \"num_key_value_heads\": 2, \"head_dim\": 16, "
                                     "\"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-5, "
                                     "\"tie_word_embeddings\": true, \"rope_scaling\": null, "
                                     "\"hidden_act\": \"silu\"}", "x", &c), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(c.num_key_value_heads, 2);
    cr_assert_eq(c.head_dim, 16);
    cr_assert_float_eq(c.rope_theta, 500000.0, 1e-6);
    cr_assert_float_eq(c.rms_norm_eps, 1e-5, 1e-12);
    cr_assert_eq(c.tie_word_embeddings, 1);
}

Test(config, qwen2_has_qkv_biases_and_mistral_a_window)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"qwen2\", \"hidden_size\": 64, "
                                     "\"intermediate_size\": 172, \"num_hidden_layers\": 2, "
                                     "\"num_attention_heads\": 8, \"vocab_size\": 512, "
                                     "\"max_position_embeddings\": 256, "
                                     "\"use_sliding_window\": false}", "q", &c), 0);
    cr_assert_eq(c.qkv_bias, 1);
    cr_assert_eq(c.o_bias, 0);
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"mistral\", \"hidden_size\": 64, "
                                     "\"intermediate_size\": 172, \"num_hidden_layers\": 2, "
                                     "\"num_attention_heads\": 8, \"vocab_size\": 512, "
                                     "\"max_position_embeddings\": 256, "
                                     "\"sliding_window\": 128}", "m", &c), 0);
    cr_assert_eq(c.sliding_window, 128);
    cr_assert_eq(c.qkv_bias, 0);
}

static void expect_error(const char *json, int code, const char *needle1, const char *needle2)
{
    spruce_config c;
    int rc = spruce_config_parse(json, "dir/config.json", &c);
    cr_assert_eq(rc, code, "expected %d, got %d (%s) for %s", code, rc, spruce_errdetail(), json);
    cr_assert(strstr(spruce_errdetail(), "dir/config.json"), "no file in '%s'", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), needle1), "no '%s' in '%s'", needle1, spruce_errdetail());
    if (needle2)
        cr_assert(strstr(spruce_errdetail(), needle2), "no '%s' in '%s'", needle2,
                  spruce_errdetail());
}

Test(config, errors_name_the_file_and_key)
{
    expect_error("{\"model_type\": \"llama\"}", SPRUCE_EFORMAT, "hidden_size", "missing");
    expect_error("{" MINI ", \"num_key_value_heads\": \"two\"}", SPRUCE_EFORMAT,
                 "num_key_value_heads", "integer");
    expect_error("{" MINI ", \"num_key_value_heads\": 3}", SPRUCE_EFORMAT, "num_key_value_heads",
                 NULL);
    expect_error("{" MINI ", \"hidden_size\": -4}", SPRUCE_EFORMAT, "hidden_size", NULL);
    expect_error("{" MINI ", \"rms_norm_eps\": \"small\"}", SPRUCE_EFORMAT, "rms_norm_eps", NULL);
    expect_error("{" MINI ", }", SPRUCE_EFORMAT, "line 1", NULL);
    expect_error("[1, 2]", SPRUCE_EFORMAT, "object", NULL);
    expect_error("{\"hidden_size\": 4}", SPRUCE_EFORMAT, "model_type", NULL);
}

Test(config, unsupported_options_list_what_is_supported)
{
    expect_error("{\"model_type\": \"gpt2\", \"hidden_size\": 4}", SPRUCE_EUNSUPPORTED, "gpt2",
                 "llama, mistral, qwen2");
    expect_error("{" MINI ", \"rope_scaling\": {\"type\": \"longrope\", \"factor\": 2.0}}",
                 SPRUCE_EUNSUPPORTED, "rope_scaling", "supported");
    expect_error("{" MINI ", \"hidden_act\": \"gelu\"}", SPRUCE_EUNSUPPORTED, "gelu", "silu");
    /* a sliding layer in layer_types where the family has no window */
    expect_error("{" MINI ", \"layer_types\": [\"sliding_attention\", \"full_attention\"]}",
                 SPRUCE_EUNSUPPORTED, "layer_types[0]", "supported");
}

Test(config, missing_file_is_named)
{
    spruce_config c;
    cr_assert_eq(spruce_config_load("/nonexistent/spruce-model", &c), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "/nonexistent/spruce-model"));
}

/* ---- the family table -------------------------------------------------------- */

Test(family, is_linear_knows_the_prunable_weights)
{
    static const char *const yes[] = {
        "model.layers.0.self_attn.q_proj.weight", "model.layers.3.self_attn.k_proj.weight",
        "model.layers.12.self_attn.v_proj.weight", "model.layers.3.self_attn.o_proj.weight",
        "model.layers.3.mlp.gate_proj.weight", "model.layers.3.mlp.up_proj.weight",
        "model.layers.3.mlp.down_proj.weight",
    };
    static const char *const no[] = {
        "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
        "model.layers.3.input_layernorm.weight", "model.layers.3.post_attention_layernorm.weight",
        "model.layers.3.self_attn.q_proj.bias", "model.layers.3.mlp.down_proj",
        "model.layers.3.mlp.down_proj.weight.x", "model.layers.x.mlp.down_proj.weight",
        "model.layers..mlp.down_proj.weight", "model.layers.03.mlp.down_proj.weight",
        "model.layers.3.mlp.fc1.weight", "layers.3.mlp.down_proj.weight",
        "model.layers.3.self_attn.rotary_emb.inv_freq", "",
    };
    const char *types[] = {"llama", "mistral", "qwen2"};
    size_t i, k;
    for (k = 0; k < 3; k++) {
        for (i = 0; i < sizeof yes / sizeof yes[0]; i++)
            cr_assert_eq(spruce_family_is_linear(types[k], yes[i]), 1, "%s %s", types[k], yes[i]);
        for (i = 0; i < sizeof no / sizeof no[0]; i++)
            cr_assert_eq(spruce_family_is_linear(types[k], no[i]), 0, "%s %s", types[k], no[i]);
    }
    cr_assert_eq(spruce_family_is_linear("gpt2", "h.0.mlp.c_fc.weight"), SPRUCE_EUNSUPPORTED);
    cr_assert(strstr(spruce_errdetail(), "gpt2"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "llama, mistral, qwen2"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_family_is_linear(NULL, "x"), SPRUCE_EINVAL);
    cr_assert_eq(spruce_family_is_linear("llama", NULL), SPRUCE_EINVAL);
}

Test(family, table_is_complete_and_consistent)
{
    char list[256] = "";
    const spruce_family *f;
    int i, l;
    for (i = 0; (f = spruce_family_at(i)); i++) {
        int sites[SPRUCE_NSITES] = {0, 0, 0, 0};
        /* a second layout of a family (OPT's decoder.*) follows its first row */
        if (spruce_family_find(f->model_type) != f) {
            cr_assert(f->opt, "%s: only OPT has two layouts", f->model_type);
            cr_assert_eq(spruce_family_next(spruce_family_find(f->model_type)), f);
            cr_assert_str_neq(f->embed, spruce_family_find(f->model_type)->embed);
        } else {
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     f->model_type);
        }
        cr_assert(f->embed && f->final_norm && f->head && f->layers && f->attn_norm &&
                  f->mlp_norm && f->architecture, "%s", f->model_type);
        cr_assert(!f->q_norm == !f->k_norm, "%s: q and k norms go together", f->model_type);
        cr_assert(!f->post_attn_norm == !f->post_mlp_norm, "%s: post norms go together",
                  f->model_type);
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            /* only OPT lacks a layer: its MLP has no gate */
            cr_assert(f->linear[l].path || (f->opt && l == SPRUCE_PROJ_GATE), "%s linear %d",
                      f->model_type, l);
            cr_assert_eq(f->linear[l].site, spruce_proj_site((spruce_proj)l));
            sites[f->linear[l].site]++;
        }
        for (l = 0; l < SPRUCE_NSITES; l++)
            cr_assert(sites[l] > 0, "%s: no linear layer reads site %d", f->model_type, l);
        cr_assert(!f->moe || (f->router && f->experts && f->expert_proj[0] &&
                              f->expert_proj[1] && f->expert_proj[2] && f->experts_key),
                  "%s: a mixture of experts names its router, experts and count", f->model_type);
    }
    cr_assert_eq(i, 11);
    cr_assert_str_eq(list, spruce_family_supported());
    cr_assert_null(spruce_family_find("gemma"));
    cr_assert_null(spruce_family_find(NULL));
    cr_assert_null(spruce_family_at(-1));
}

/* The tensors of a config: the sizes, the biases of each family. */
Test(family, tensors_follow_the_config)
{
    spruce_config c;
    spruce_family_tensor t;
    size_t i, nbias = 0, nlin = 0, nnorm = 0;
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"qwen2\", \"hidden_size\": 64, "
                                     "\"intermediate_size\": 172, \"num_hidden_layers\": 2, "
                                     "\"num_attention_heads\": 8, \"num_key_value_heads\": 2, "
                                     "\"vocab_size\": 512, \"max_position_embeddings\": 256, "
                                     "\"tie_word_embeddings\": true}", "q", &c), 0);
    cr_assert_eq(c.family, spruce_family_find("qwen2"));
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++) {
        cr_assert_neq(t.role, SPRUCE_TENSOR_HEAD, "tied: no head");
        if (t.role == SPRUCE_TENSOR_BIAS) {
            nbias++;
            cr_assert(t.proj <= SPRUCE_PROJ_V, "%s", t.name);
            cr_assert_eq(t.ndim, 1);
        }
        if (t.role == SPRUCE_TENSOR_LINEAR) {
            nlin++;
            cr_assert_eq(spruce_family_is_linear("qwen2", t.name), 1, "%s", t.name);
            if (t.proj == SPRUCE_PROJ_K)
                cr_assert(t.shape[0] == 16 && t.shape[1] == 64, "%s", t.name);
            if (t.proj == SPRUCE_PROJ_DOWN)
                cr_assert(t.shape[0] == 64 && t.shape[1] == 172, "%s", t.name);
        } else {
            cr_assert_eq(spruce_family_is_linear("qwen2", t.name), 0, "%s", t.name);
        }
        nnorm += t.role == SPRUCE_TENSOR_NORM;
    }
    cr_assert_eq(i, 1 + 2 * (2 + 7 + 3) + 1);
    cr_assert_eq(nbias, 6);
    cr_assert_eq(nlin, 14);
    cr_assert_eq(nnorm, 5);
    cr_assert_eq(spruce_family_tensor_at(&c, 0, &t), 1);
    cr_assert_str_eq(t.name, "model.embed_tokens.weight");
    cr_assert_eq(spruce_family_tensor_at(&c, 1, &t), 1);
    cr_assert_str_eq(t.name, "model.layers.0.input_layernorm.weight");
    cr_assert_eq(spruce_family_tensor_at(&c, 3, &t), 1);
    cr_assert_str_eq(t.name, "model.layers.0.self_attn.q_proj.bias");
    snprintf(c.model_type, sizeof c.model_type, "gpt2");
    c.family = NULL;
    cr_assert_eq(spruce_family_tensor_at(&c, 0, &t), SPRUCE_EUNSUPPORTED);
}

/* synth writes exactly the tensors of the table, which the model opens,
 * reads and runs. */
Test(family, synth_writes_exactly_what_the_forward_reads)
{
    char *d = tmp_dir(), out[1200];
    spruce_synth_config sc;
    const spruce_ckpt *ck;
    spruce_model *m;
    uint32_t ids[8] = {1, 5, 9, 2, 7, 3, 3, 0};
    float *logits;
    size_t i;
    spruce_synth_defaults(&sc);
    sc.hidden = 64;
    sc.intermediate = 96;
    sc.heads = 4;
    sc.kv_heads = 2;
    sc.vocab = 32;
    sc.max_position = 16;
    snprintf(out, sizeof out, "%s/m", d);
    cr_assert_eq(spruce_synth_write(out, &sc, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    ck = spruce_model_ckpt(m);
    i = expect_table_in_ckpt(spruce_model_config(m), ck);
    cr_assert_eq(i, (size_t)spruce_ckpt_count(ck), "the table names %zu tensors, synth "
                 "wrote %zu", i, (size_t)spruce_ckpt_count(ck));
    cr_assert_eq(spruce_model_cache_blocks(m), 0, "%s", spruce_errdetail());
    logits = malloc(8 * 32 * sizeof(float));
    cr_assert_eq(spruce_model_forward(m, ids, 8, logits), 0, "%s", spruce_errdetail());
    for (i = 0; i < 8 * 32; i++)
        cr_assert(isfinite(logits[i]));
    free(logits);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

/* ---- the block forward against a double-precision reference ---------------- */

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_vec(size_t n, float scale)
{
    float *p = malloc(n * sizeof(float));
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = scale * frand();
    return p;
}

static spruce_block *rand_block(const spruce_config *c)
{
    spruce_block *b = calloc(1, sizeof *b);
    int l, qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    int rows[7] = {qd, kvd, kvd, c->hidden_size, c->intermediate_size, c->intermediate_size,
                   c->hidden_size};
    int cols[7] = {c->hidden_size, c->hidden_size, c->hidden_size, qd, c->hidden_size,
                   c->hidden_size, c->intermediate_size};
    b->attn_norm = rand_vec((size_t)c->hidden_size, 1.0f);
    b->mlp_norm = rand_vec((size_t)c->hidden_size, 1.0f);
    for (l = 0; l < 7; l++) {
        b->rows[l] = rows[l];
        b->cols[l] = cols[l];
        b->w[l] = rand_vec((size_t)rows[l] * cols[l], 1.0f / sqrtf((float)cols[l]));
        if ((l <= 2 && c->qkv_bias) || (l == 3 && c->o_bias) || (l >= 4 && c->mlp_bias))
            b->b[l] = rand_vec((size_t)rows[l], 0.5f);
    }
    return b;
}

static void free_block(spruce_block *b)
{
    int l;
    free(b->attn_norm);
    free(b->mlp_norm);
    for (l = 0; l < 7; l++) {
        free(b->w[l]);
        free(b->b[l]);
    }
    free(b);
}

/* y (T, rows) = x (T, cols) W^T + b in double. */
static void ref_linear(double *y, const double *x, const float *W, const float *b, int T,
                       int rows, int cols)
{
    int t, r, k;
    for (t = 0; t < T; t++)
        for (r = 0; r < rows; r++) {
            double s = b ? b[r] : 0.0;
            for (k = 0; k < cols; k++)
                s += x[(size_t)t * cols + k] * W[(size_t)r * cols + k];
            y[(size_t)t * rows + r] = s;
        }
}

static void ref_rmsnorm(double *y, const double *x, const float *w, int T, int n, double eps)
{
    int t, j;
    for (t = 0; t < T; t++) {
        double ss = 0;
        for (j = 0; j < n; j++)
            ss += x[(size_t)t * n + j] * x[(size_t)t * n + j];
        ss = 1.0 / sqrt(ss / n + eps);
        for (j = 0; j < n; j++)
            y[(size_t)t * n + j] = x[(size_t)t * n + j] * ss * w[j];
    }
}

static void ref_rope(double *x, int T, int nh, int d, double theta)
{
    int t, h, i;
    for (t = 0; t < T; t++)
        for (h = 0; h < nh; h++)
            for (i = 0; i < d / 2; i++) {
                double f = (double)t * pow(theta, -2.0 * i / d);
                double *v = x + (size_t)t * nh * d + (size_t)h * d, a = v[i], b = v[i + d / 2];
                v[i] = a * cos(f) - b * sin(f);
                v[i + d / 2] = b * cos(f) + a * sin(f);
            }
}

/* One sequence x (T, hidden) through the block, in double. */
static void ref_block(const spruce_config *c, const spruce_block *b, float *xf, int T)
{
    int H = c->num_attention_heads, KV = c->num_key_value_heads, d = c->head_dim;
    int hid = c->hidden_size, inter = c->intermediate_size, qd = H * d, kvd = KV * d;
    double *x = malloc(sizeof(double) * T * hid), *a = malloc(sizeof(double) * T * hid);
    double *q = malloc(sizeof(double) * T * qd), *k = malloc(sizeof(double) * T * kvd);
    double *v = malloc(sizeof(double) * T * kvd), *att = calloc((size_t)T * qd, sizeof(double));
    double *o = malloc(sizeof(double) * T * hid), *g = malloc(sizeof(double) * T * inter);
    double *u = malloc(sizeof(double) * T * inter), *p = malloc(sizeof(double) * T);
    int t, h, i, j, e;
    for (i = 0; i < T * hid; i++)
        x[i] = xf[i];
    ref_rmsnorm(a, x, b->attn_norm, T, hid, c->rms_norm_eps);
    ref_linear(q, a, b->w[0], b->b[0], T, qd, hid);
    ref_linear(k, a, b->w[1], b->b[1], T, kvd, hid);
    ref_linear(v, a, b->w[2], b->b[2], T, kvd, hid);
    ref_rope(q, T, H, d, c->rope_theta);
    ref_rope(k, T, KV, d, c->rope_theta);
    for (h = 0; h < H; h++) {
        int gh = h / (H / KV);
        for (i = 0; i < T; i++) {
            double mx = -1e300, sum = 0;
            for (j = 0; j <= i; j++) {
                double s = 0;
                for (e = 0; e < d; e++)
                    s += q[(size_t)i * qd + h * d + e] * k[(size_t)j * kvd + gh * d + e];
                p[j] = s / sqrt((double)d);
                if (p[j] > mx)
                    mx = p[j];
            }
            for (j = 0; j <= i; j++) {
                p[j] = exp(p[j] - mx);
                sum += p[j];
            }
            for (j = 0; j <= i; j++)
                for (e = 0; e < d; e++)
                    att[(size_t)i * qd + h * d + e] += p[j] / sum * v[(size_t)j * kvd + gh * d + e];
        }
    }
    ref_linear(o, att, b->w[3], b->b[3], T, hid, qd);
    for (i = 0; i < T * hid; i++)
        x[i] += o[i];
    ref_rmsnorm(a, x, b->mlp_norm, T, hid, c->rms_norm_eps);
    ref_linear(g, a, b->w[4], b->b[4], T, inter, hid);
    ref_linear(u, a, b->w[5], b->b[5], T, inter, hid);
    for (i = 0; i < T * inter; i++)
        g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    ref_linear(o, g, b->w[6], b->b[6], T, hid, inter);
    for (t = 0; t < T * hid; t++)
        xf[t] = (float)(x[t] + o[t]);
    free(x); free(a); free(q); free(k); free(v); free(att); free(o); free(g); free(u); free(p);
}

static void check_block_forward(spruce_config *c, int nseq, int T, spruce_attention path)
{
    spruce_block *b = rand_block(c);
    size_t n = (size_t)nseq * T * c->hidden_size, i;
    float *x = rand_vec(n, 1.0f), *ref = malloc(n * sizeof(float));
    spruce_fwd_ws *ws = spruce_fwd_ws_alloc(c, T, nseq);
    double maxerr = 0, maxref = 0;
    int s;
    cr_assert(ws);
    memcpy(ref, x, n * sizeof(float));
    for (s = 0; s < nseq; s++)
        ref_block(c, b, ref + (size_t)s * T * c->hidden_size, T);
    cr_assert_eq(spruce_fwd_ws_set_attention(ws, path), 0);
    cr_assert_eq(spruce_block_forward(c, b, x, nseq, T, ws, NULL, NULL, -1), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]);
        if (e > maxerr)
            maxerr = e;
        if (fabs(ref[i]) > maxref)
            maxref = fabs(ref[i]);
    }
    /* float32 sums of up to max(hidden, intermediate) terms of size ~1 */
    cr_assert(maxerr < 1e-5 * sqrt((double)c->intermediate_size) * (1 + maxref),
              "%s attention: max error %g (max |ref| %g)",
              path == SPRUCE_ATTENTION_ROWS ? "rows" : "blas", maxerr, maxref);
    spruce_fwd_ws_free(ws);
    free(x);
    free(ref);
    free_block(b);
}

Test(forward, block_matches_double_reference_small_heads)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"qwen2\", \"hidden_size\": 32, "
                                     "\"intermediate_size\": 40, \"num_hidden_layers\": 1, "
                                     "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                                     "\"vocab_size\": 16, \"max_position_embeddings\": 64, "
                                     "\"rms_norm_eps\": 1e-5, \"rope_theta\": 1000.0}", "t", &c),
                 0);
    check_block_forward(&c, 3, 19, SPRUCE_ATTENTION_ROWS);
    check_block_forward(&c, 3, 19, SPRUCE_ATTENTION_BLAS);
}

Test(forward, block_matches_double_reference_large_heads)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"llama\", \"hidden_size\": 64, "
                                     "\"intermediate_size\": 96, \"num_hidden_layers\": 1, "
                                     "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                                     "\"vocab_size\": 16, \"max_position_embeddings\": 128, "
                                     "\"attention_bias\": true, \"mlp_bias\": true}", "t", &c), 0);
    cr_assert_eq(c.head_dim, 32);
    check_block_forward(&c, 2, 70, SPRUCE_ATTENTION_BLAS);
    check_block_forward(&c, 2, 70, SPRUCE_ATTENTION_ROWS);
}

typedef struct {
    int calls[SPRUCE_NSITES];
    int cols[SPRUCE_NSITES];
    int tokens;
} tap_log;

static int log_tap(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    tap_log *t = ctx;
    (void)X;
    t->calls[site]++;
    t->cols[site] = cols;
    t->tokens = tokens;
    return 0;
}

Test(forward, taps_see_each_input_and_stop_early)
{
    spruce_config c;
    spruce_block *b;
    spruce_fwd_ws *ws;
    float *x, *x0;
    size_t n;
    tap_log log;
    int site;
    cr_assert_eq(spruce_config_parse("{" MINI ", \"num_key_value_heads\": 4}", "t", &c), 0);
    b = rand_block(&c);
    ws = spruce_fwd_ws_alloc(&c, 16, 2);
    n = (size_t)2 * 16 * c.hidden_size;
    x = rand_vec(n, 1.0f);
    x0 = malloc(n * sizeof(float));
    memcpy(x0, x, n * sizeof(float));
    for (site = 0; site < SPRUCE_NSITES; site++) {
        memset(&log, 0, sizeof log);
        cr_assert_eq(spruce_block_forward(&c, b, x, 2, 16, ws, log_tap, &log, site), 0);
        cr_assert_eq(memcmp(x, x0, n * sizeof(float)), 0, "stop_after %d changed x", site);
        cr_assert_eq(log.calls[site], 1);
        cr_assert_eq(log.tokens, 32);
        if (site + 1 < SPRUCE_NSITES)
            cr_assert_eq(log.calls[site + 1], 0);
    }
    cr_assert_eq(log.cols[SPRUCE_SITE_QKV], 64);
    cr_assert_eq(log.cols[SPRUCE_SITE_O], 64);
    cr_assert_eq(log.cols[SPRUCE_SITE_GATEUP], 64);
    cr_assert_eq(log.cols[SPRUCE_SITE_DOWN], 172);
    cr_assert_eq(spruce_block_forward(&c, b, x, 2, 16, ws, NULL, NULL, -1), 0);
    cr_assert_neq(memcmp(x, x0, n * sizeof(float)), 0);
    /* More tokens than the workspace holds is an error, not an overflow. */
    cr_assert_eq(spruce_block_forward(&c, b, x, 2, 17, ws, NULL, NULL, -1), SPRUCE_EINVAL);
    cr_assert_eq(spruce_block_forward(&c, b, x, 3, 16, ws, NULL, NULL, -1), SPRUCE_EINVAL);
    spruce_fwd_ws_free(ws);
    spruce_fwd_ws_free(NULL);
    free(x);
    free(x0);
    free_block(b);
}
