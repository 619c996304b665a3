/* test_synth.c: spruce_synth_write and `spruce synth`. */
#define _GNU_SOURCE
#include "ckpt_testutil.h"
#include "shell_testutil.h"

/* ------------------------------------------------------- synth */

Test(synth, deterministic_and_seed_dependent)
{
    char *tmp = mktmp(), *a = path2(tmp, "a"), *b = path2(tmp, "b"), *c = path2(tmp, "c");
    char *pa = path2(a, "model.safetensors"), *pb = path2(b, "model.safetensors"), *pc = path2(c, "model.safetensors");
    char *ca = path2(a, "config.json"), *cb = path2(b, "config.json");
    spruce_synth_config cfg = small_cfg(SPRUCE_DTYPE_F16);
    cr_assert_eq(spruce_synth_write(a, &cfg, 0), 0);
    cr_assert_eq(spruce_synth_write(b, &cfg, 0), 0);
    cfg.seed = 8;
    cr_assert_eq(spruce_synth_write(c, &cfg, 0), 0);
    cr_assert(files_equal(pa, pb));
    cr_assert(files_equal(ca, cb));
    cr_assert_not(files_equal(pa, pc));
    cr_assert_eq(spruce_synth_write(a, &cfg, 0), SPRUCE_EEXIST);
    cr_assert_eq(spruce_synth_write(a, &cfg, 1), 0);
    cr_assert(files_equal(pa, pc), "--force replaced it");
    cfg.heads = 3;
    cr_assert_eq(spruce_synth_write(c, &cfg, 1), SPRUCE_EINVAL);
    rmrf(tmp);
    free(a); free(b); free(c); free(pa); free(pb); free(pc); free(ca); free(cb);
    free(tmp);
}

Test(synth, llama_shapes_config_and_scales)
{
    char *tmp = mktmp(), *d = path2(tmp, "m"), *cj = path2(d, "config.json");
    spruce_synth_config cfg = small_cfg(SPRUCE_DTYPE_F32);
    spruce_ckpt *c;
    json_t *j;
    json_error_t err;
    int i;
    cfg.hidden = 64;
    cfg.intermediate = 160;
    cfg.layers = 2;
    cfg.heads = 8;
    cfg.kv_heads = 2;
    cfg.vocab = 300;
    cr_assert_eq(spruce_synth_write(d, &cfg, 0), 0);
    cr_assert_eq(spruce_ckpt_open(d, &c), 0);
    cr_assert_eq(spruce_ckpt_count(c), 9 * 2 + 3);
    {
        static const struct { const char *name; int64_t r, k; double std, mean; } exp[] = {
            {"model.embed_tokens.weight", 300, 64, 1.0, 0},
            {"model.layers.1.self_attn.q_proj.weight", 64, 64, 0.125, 0},
            {"model.layers.1.self_attn.k_proj.weight", 16, 64, 0.125, 0},
            {"model.layers.1.self_attn.v_proj.weight", 16, 64, 0.125, 0},
            {"model.layers.1.self_attn.o_proj.weight", 64, 64, 0.125, 0},
            {"model.layers.0.mlp.gate_proj.weight", 160, 64, 0.125, 0},
            {"model.layers.0.mlp.up_proj.weight", 160, 64, 0.125, 0},
            {"model.layers.0.mlp.down_proj.weight", 64, 160, 0.0790569, 0},
            {"model.layers.0.input_layernorm.weight", 64, 0, 0.05, 1},
            {"model.layers.1.post_attention_layernorm.weight", 64, 0, 0.05, 1},
            {"model.norm.weight", 64, 0, 0.05, 1},
            {"lm_head.weight", 300, 64, 0.125, 0},
        };
        for (i = 0; i < (int)(sizeof exp / sizeof exp[0]); i++) {
            const spruce_tensor *t = spruce_ckpt_find(c, exp[i].name);
            size_t n, k;
            float *v;
            double s = 0, s2 = 0, mean, sd;
            cr_assert_not_null(t, "%s missing", exp[i].name);
            cr_assert_eq(t->ndim, exp[i].k ? 2 : 1, "%s", exp[i].name);
            cr_assert_eq(t->shape[0], exp[i].r, "%s", exp[i].name);
            if (exp[i].k)
                cr_assert_eq(t->shape[1], exp[i].k, "%s", exp[i].name);
            n = (size_t)spruce_tensor_numel(t);
            v = malloc(n * 4);
            cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
            for (k = 0; k < n; k++) {
                s += v[k];
                s2 += (double)v[k] * v[k];
            }
            mean = s / n;
            sd = sqrt(s2 / n - mean * mean);
            /* sampling error of the std is about std/sqrt(2n): allow 6 of those */
            cr_assert(fabs(sd - exp[i].std) < 6 * exp[i].std / sqrt(2.0 * n), "%s: std %g, expected %g",
                      exp[i].name, sd, exp[i].std);
            cr_assert(fabs(mean - exp[i].mean) < 6 * exp[i].std / sqrt((double)n), "%s: mean %g",
                      exp[i].name, mean);
            free(v);
        }
    }
    spruce_ckpt_close(c);
    j = json_load_file(cj, 0, &err);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "model_type")), "llama");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "architectures"), 0)), "LlamaForCausalLM");
    cr_assert_eq(json_integer_value(json_object_get(j, "hidden_size")), 64);
    cr_assert_eq(json_integer_value(json_object_get(j, "intermediate_size")), 160);
    cr_assert_eq(json_integer_value(json_object_get(j, "num_hidden_layers")), 2);
    cr_assert_eq(json_integer_value(json_object_get(j, "num_attention_heads")), 8);
    cr_assert_eq(json_integer_value(json_object_get(j, "num_key_value_heads")), 2);
    cr_assert_eq(json_integer_value(json_object_get(j, "vocab_size")), 300);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_position_embeddings")), 64);
    cr_assert_float_eq(json_number_value(json_object_get(j, "rms_norm_eps")), 1e-5, 1e-12);
    cr_assert_float_eq(json_number_value(json_object_get(j, "rope_theta")), 10000.0, 1e-9);
    cr_assert(json_is_false(json_object_get(j, "tie_word_embeddings")));
    cr_assert_str_eq(json_string_value(json_object_get(j, "torch_dtype")), "float32");
    json_decref(j);
    rmrf(tmp);
    free(d);
    free(cj);
    free(tmp);
}

Test(synth, half_dtypes_are_the_f32_model_rounded)
{
    char *tmp = mktmp(), *a = path2(tmp, "f32"), *b = path2(tmp, "bf16"), *h = path2(tmp, "f16");
    spruce_synth_config cfg = small_cfg(SPRUCE_DTYPE_F32);
    spruce_ckpt *ca, *cb, *ch;
    int i;
    cr_assert_eq(spruce_synth_write(a, &cfg, 0), 0);
    cfg.dtype = SPRUCE_DTYPE_BF16;
    cr_assert_eq(spruce_synth_write(b, &cfg, 0), 0);
    cfg.dtype = SPRUCE_DTYPE_F16;
    cr_assert_eq(spruce_synth_write(h, &cfg, 0), 0);
    cr_assert_eq(spruce_ckpt_open(a, &ca), 0);
    cr_assert_eq(spruce_ckpt_open(b, &cb), 0);
    cr_assert_eq(spruce_ckpt_open(h, &ch), 0);
    for (i = 0; i < spruce_ckpt_count(ca); i++) {
        const spruce_tensor *x = spruce_ckpt_tensor_at(ca, i), *y = spruce_ckpt_tensor_at(cb, i),
                            *z = spruce_ckpt_tensor_at(ch, i);
        size_t n = (size_t)spruce_tensor_numel(x), k;
        const float *xv = x->data;
        cr_assert_str_eq(y->dtype_name, "BF16");
        cr_assert_str_eq(z->dtype_name, "F16");
        for (k = 0; k < n; k++) {
            uint16_t hb, hh;
            memcpy(&hb, (const uint8_t *)y->data + 2 * k, 2);
            memcpy(&hh, (const uint8_t *)z->data + 2 * k, 2);
            cr_assert_eq(hb, bf16_ref(xv[k]));
            cr_assert_eq(hh, f16_ref(xv[k]));
        }
    }
    spruce_ckpt_close(ca);
    spruce_ckpt_close(cb);
    spruce_ckpt_close(ch);
    rmrf(tmp);
    free(a);
    free(b);
    free(h);
    free(tmp);
}

Test(synth, command_line)
{
    const char *bin = getenv("SPRUCE_BIN");
    char *tmp, *m;
    if (!bin || access(bin, X_OK))
        cr_skip_test("SPRUCE_BIN not set or not executable");
    tmp = mktmp();
    m = path2(tmp, "m");
    cr_assert_eq(run_status("%s synth --help >/dev/null", bin), 0);
    cr_assert_eq(run_status("%s synth 2>/dev/null", bin), 2);
    cr_assert_eq(run_status("%s synth %s --dtype f8 2>/dev/null", bin, m), 2);
    cr_assert_eq(run_status("%s synth %s --heads 3 2>/dev/null", bin, m), 2);
    cr_assert_eq(run_status("%s synth %s --hidden x 2>/dev/null", bin, m), 2);
    cr_assert_eq(run_status("%s synth %s --bogus 2>/dev/null", bin, m), 2);
    cr_assert_eq(run_status("%s synth %s --hidden 32 --intermediate 40 --layers 1 --heads 2 "
                            "--kv-heads 1 --vocab 100 --dtype bf16 --calib %s/c.u16 "
                            "--eval %s/e.txt --count 500 2>/dev/null",
                            bin, m, tmp, tmp), 0);
    cr_assert_eq(run_status("%s synth %s 2>/dev/null", bin, m), 1, "existing output refused");
    {
        spruce_ckpt *c;
        cr_assert_eq(spruce_ckpt_open(m, &c), 0);
        cr_assert_eq(spruce_ckpt_find(c, "model.layers.0.mlp.down_proj.weight")->shape[1], 40);
        cr_assert_eq(spruce_ckpt_find(c, "lm_head.weight")->dtype, SPRUCE_DTYPE_BF16);
        spruce_ckpt_close(c);
    }
    {
        char *cp = path2(tmp, "c.u16"), *ep = path2(tmp, "e.txt");
        size_t n;
        uint8_t *b = read_bytes(cp, &n);
        size_t i;
        cr_assert_eq(n, 1000);
        for (i = 0; i < n; i += 2)
            cr_assert_lt(b[i] | b[i + 1] << 8, 100);
        free(b);
        cr_assert(exists(ep));
        free(cp);
        free(ep);
    }
    rmrf(tmp);
    free(m);
    free(tmp);
}

