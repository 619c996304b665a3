/* synth.c: a deterministic random LLaMA-shaped Hugging Face checkpoint, of
 * llama or another family of the table (spruce_synth_write_family).
 *
 * The tensors are those of the family's row of the family table (spruce_family.h),
 * with the Hugging Face names and shapes (W is (out, in) row-major):
 *   model.embed_tokens.weight                      (vocab, hidden)      N(0, 1)
 *   model.layers.{i}.input_layernorm.weight         (hidden)            1 + 0.05 N(0, 1)
 *   model.layers.{i}.self_attn.q_proj.weight        (heads*hd, hidden)  N(0, 1/hidden)
 *   model.layers.{i}.self_attn.{k,v}_proj.weight    (kv*hd, hidden)     N(0, 1/hidden)
 *   model.layers.{i}.self_attn.o_proj.weight        (hidden, heads*hd)  N(0, 1/(heads*hd))
 *   model.layers.{i}.post_attention_layernorm.weight (hidden)           1 + 0.05 N(0, 1)
 *   model.layers.{i}.mlp.{gate,up}_proj.weight      (inter, hidden)     N(0, 1/hidden)
 *   model.layers.{i}.mlp.down_proj.weight           (hidden, inter)     N(0, 1/inter)
 *   model.norm.weight (hidden), lm_head.weight (vocab, hidden)          as above
 *   qwen3: model.layers.{i}.self_attn.{q,k}_norm.weight (head_dim)       as the norms
 * Gemma (gemma2, gemma3_text) stores norm weights w applied as (1 + w): they
 * are 0.05 N(0, 1); its MLP input norm is pre_feedforward_layernorm, its
 * post_attention_layernorm and post_feedforward_layernorm norm the branch
 * outputs; the embedding is N(0, 1/hidden) (the forward multiplies it by
 * sqrt(hidden)) and tied to the head.  config.json has Gemma's keys:
 * gelu_pytorch_tanh, query_pre_attn_scalar = head_dim, sliding_window =
 * max_position / 4, gemma2's soft-caps 50 and 30, gemma3's
 * sliding_window_pattern (6, or 2 below 6 layers so that a small model has
 * both kinds of layer), rope_theta 1e6 and rope_local_base_freq 10000.
 * mixtral and qwen3_moe: every block's MLP is a mixture of experts (router
 * (experts, hidden), each expert's gate/up (width, hidden) and down (hidden,
 * width), N(0, 1/fan_in) like the other linear weights), config.json with
 * the family's expert keys (qwen3_moe: norm_topk_prob true).
 * Linear weights are scaled by 1/sqrt(fan_in), as in a trained model, so that
 * activations stay of order one through the layers.  Each run of 65536
 * elements of a tensor has its own generator seeded from (seed, tensor name,
 * run index): the output is the same whatever the number of threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "ckpt_internal.h"
#include "spruce_family.h"

/* The family synth writes by default (its table row names every tensor). */
#define SYNTH_FAMILY "llama"

void spruce_synth_family_defaults(spruce_synth_family *f)
{
    memset(f, 0, sizeof *f);
    f->model_type = SYNTH_FAMILY;
    f->rope = SPRUCE_ROPE_DEFAULT;
}

static const char *fam_type(const spruce_synth_family *f)
{
    return f && f->model_type ? f->model_type : SYNTH_FAMILY;
}

static int fam_head_dim(const spruce_synth_config *c, const spruce_synth_family *f)
{
    return f && f->head_dim > 0 ? f->head_dim : c->hidden / (c->heads ? c->heads : 1);
}

/* A family with experts: their count, top-k and width, with the defaults. */
static void fam_experts(const spruce_synth_config *c, const spruce_synth_family *f, int *E,
                        int *k, int *width)
{
    *E = f && f->experts > 0 ? f->experts : 8;
    *k = f && f->experts_per_tok > 0 ? f->experts_per_tok : 2;
    *width = f && f->expert_intermediate > 0 ? f->expert_intermediate : c->intermediate;
}

static double fam_factor(const spruce_synth_family *f)
{
    if (f->rope_factor > 0)
        return f->rope_factor;
    return f->rope == SPRUCE_ROPE_LLAMA3 ? 8.0 : 4.0;
}

#define RUN 65536   /* elements per generator */
#define BATCH 64    /* runs generated (in parallel) per write */

typedef struct {
    char name[160];
    int ndim;
    int64_t shape[2];
    int kind;      /* 0 linear, 1 norm, 2 embedding (OPT: and positions), 3 bias */
    int64_t fan_in;
} tdesc;

void spruce_synth_defaults(spruce_synth_config *c)
{
    memset(c, 0, sizeof *c);
    c->hidden = 256;
    c->intermediate = 688;
    c->layers = 2;
    c->heads = 8;
    c->kv_heads = 4;
    c->vocab = 512;
    c->max_position = 512;
    c->dtype = SPRUCE_DTYPE_F32;
    c->seed = 0;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = mix64(seed);
    while (*name)
        h = mix64(h ^ (unsigned char)*name++);
    return h;
}

/* n standard normals from a splitmix64 stream starting at s (Marsaglia's polar
 * method: one log and one square root per pair, no trigonometry). */
static void normals(uint64_t s, float *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i += 2) {
        double u, v, q, f;
        do {
            s = mix64(s);
            u = (double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0; /* [-1, 1) */
            s = mix64(s);
            v = (double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0;
            q = u * u + v * v;
        } while (q >= 1.0 || q == 0.0);
        f = sqrt(-2.0 * log(q) / q);
        out[i] = (float)(u * f);
        if (i + 1 < n)
            out[i + 1] = (float)(v * f);
    }
}

static const char *dtype_str(spruce_dtype d)
{
    return d == SPRUCE_DTYPE_F16 ? "F16" : d == SPRUCE_DTYPE_BF16 ? "BF16" : "F32";
}

static const char *torch_str(spruce_dtype d)
{
    return d == SPRUCE_DTYPE_F16 ? "float16" : d == SPRUCE_DTYPE_BF16 ? "bfloat16" : "float32";
}

static int check_config(const spruce_synth_config *c, const spruce_synth_family *f)
{
    if (c->hidden <= 0 || c->intermediate <= 0 || c->layers <= 0 || c->heads <= 0 ||
        c->kv_heads <= 0 || c->vocab <= 0 || c->max_position <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "synth: every size must be positive");
    if (!spruce_family_find(fam_type(f)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "synth: family '%s' (supported: %s)",
                              fam_type(f), spruce_family_supported());
    if (f && f->head_dim % 2)
        return spruce__seterr(SPRUCE_EINVAL, "synth: head_dim %d must be even for rotary "
                              "embeddings", f->head_dim);
    if (f && (f->rope == SPRUCE_ROPE_LONGROPE) != 0 && !spruce_family_find(fam_type(f))->phi3)
        return spruce__seterr(SPRUCE_EINVAL, "synth: rope scaling longrope is for family phi3 "
                              "only, not %s", fam_type(f));
    if (f && (f->rope < SPRUCE_ROPE_DEFAULT || f->rope > SPRUCE_ROPE_LONGROPE ||
              f->rope_factor < 0 || (f->rope == SPRUCE_ROPE_DYNAMIC && fam_head_dim(c, f) <= 2)))
        return spruce__seterr(SPRUCE_EINVAL, "synth: rope scaling %d with factor %g",
                              (int)f->rope, f->rope_factor);
    /* config.json's bounds (spruce_model.h): never write what spruce refuses to read */
    if (c->hidden > SPRUCE_MAX_HIDDEN || c->intermediate > SPRUCE_MAX_INTERMEDIATE ||
        c->layers > SPRUCE_MAX_LAYERS || c->heads > SPRUCE_MAX_HEADS ||
        c->vocab > SPRUCE_MAX_VOCAB || c->max_position > SPRUCE_MAX_POSITIONS ||
        fam_head_dim(c, f) > SPRUCE_MAX_HEAD_DIM ||
        (int64_t)c->heads * fam_head_dim(c, f) > SPRUCE_MAX_HIDDEN ||
        (int64_t)c->vocab * c->hidden > SPRUCE_MAX_TENSOR ||
        (int64_t)c->intermediate * c->hidden > SPRUCE_MAX_TENSOR)
        return spruce__seterr(SPRUCE_EINVAL, "synth: hidden %d, intermediate %d, layers %d, "
                              "heads %d, vocab %d, max_position %d: beyond config.json's bounds "
                              "(hidden <= %d, intermediate <= %d, layers and heads <= %d, "
                              "head dimension <= %d, vocab <= %d, max_position <= %d, vocab x "
                              "hidden and intermediate x hidden <= 2^36)", c->hidden,
                              c->intermediate, c->layers, c->heads, c->vocab, c->max_position,
                              SPRUCE_MAX_HIDDEN, SPRUCE_MAX_INTERMEDIATE, SPRUCE_MAX_LAYERS,
                              SPRUCE_MAX_HEAD_DIM, SPRUCE_MAX_VOCAB, SPRUCE_MAX_POSITIONS);
    if (f && f->head_dim > 0)
        ;   /* an explicit head_dim needs no hidden = heads x head_dim */
    else if (c->hidden % c->heads)
        return spruce__seterr(SPRUCE_EINVAL, "synth: hidden %d is not a multiple of heads %d",
                              c->hidden, c->heads);
    else if ((c->hidden / c->heads) % 2)
        return spruce__seterr(SPRUCE_EINVAL, "synth: head dimension %d (hidden / heads) must "
                              "be even for rotary embeddings", c->hidden / c->heads);
    if (c->heads % c->kv_heads)
        return spruce__seterr(SPRUCE_EINVAL, "synth: heads %d is not a multiple of kv-heads %d",
                              c->heads, c->kv_heads);
    if (spruce_family_find(fam_type(f))->moe) {
        int E, k, w;
        fam_experts(c, f, &E, &k, &w);
        if (E > SPRUCE_MAX_EXPERTS || k > E || w > SPRUCE_MAX_INTERMEDIATE ||
            (int64_t)w * c->hidden > SPRUCE_MAX_TENSOR)
            return spruce__seterr(SPRUCE_EINVAL, "synth: %d experts (at most %d), %d per token "
                                  "(at most the experts), width %d (at most %d)", E,
                                  SPRUCE_MAX_EXPERTS, k, w, SPRUCE_MAX_INTERMEDIATE);
    }
    if (c->dtype != SPRUCE_DTYPE_F32 && c->dtype != SPRUCE_DTYPE_F16 &&
        c->dtype != SPRUCE_DTYPE_BF16)
        return spruce__seterr(SPRUCE_EDTYPE, "synth: expected dtype F32, F16 or BF16");
    return 0;
}

/* The config the model will read from config.json (write_config). */
static void model_config(const spruce_synth_config *c, const spruce_synth_family *f,
                         spruce_config *mc)
{
    memset(mc, 0, sizeof *mc);
    snprintf(mc->model_type, sizeof mc->model_type, "%s", fam_type(f));
    mc->family = spruce_family_find(fam_type(f));
    mc->hidden_size = c->hidden;
    mc->intermediate_size = c->intermediate;
    mc->num_hidden_layers = c->layers;
    mc->num_attention_heads = c->heads;
    mc->num_key_value_heads = c->kv_heads;
    mc->head_dim = fam_head_dim(c, f);
    mc->qk_norm = mc->family && mc->family->q_norm;
    mc->tie_word_embeddings = mc->family && (mc->family->gemma || mc->family->opt);
    mc->qkv_bias = mc->family && mc->family->qkv_bias;   /* qwen2: always */
    if (mc->family && mc->family->opt) {   /* pre-norm, enable_bias, no projections */
        mc->num_key_value_heads = c->heads;
        mc->qkv_bias = mc->o_bias = mc->mlp_bias = 1;
        mc->word_embed_proj_dim = c->hidden;
    }
    mc->vocab_size = c->vocab;
    mc->max_position_embeddings = c->max_position;
    if (mc->family && mc->family->moe) {
        fam_experts(c, f, &mc->num_experts, &mc->num_experts_per_tok,
                    &mc->moe_intermediate_size);
        mc->norm_topk_prob = 1;
        mc->decoder_sparse_step = 1;
    }
}

/* Every tensor of the family table, in its order. */
static tdesc *describe(const spruce_synth_config *c, const spruce_synth_family *f, int *n)
{
    spruce_config mc;
    spruce_family_tensor ft;
    size_t i, count;
    tdesc *t;
    model_config(c, f, &mc);
    for (count = 0; spruce_family_tensor_at(&mc, count, &ft) == 1; count++)
        ;
    t = calloc(count, sizeof *t);
    if (!t)
        return NULL;
    for (i = 0; i < count; i++) {
        spruce_family_tensor_at(&mc, i, &ft);
        snprintf(t[i].name, sizeof t[i].name, "%s", ft.name);
        t[i].kind = ft.role == SPRUCE_TENSOR_NORM                                  ? 1
                    : ft.role == SPRUCE_TENSOR_EMBED || ft.role == SPRUCE_TENSOR_POSITIONS ? 2
                    : ft.role == SPRUCE_TENSOR_BIAS || ft.role == SPRUCE_TENSOR_NORM_BIAS ? 3
                                                                                           : 0;
        t[i].fan_in = (int64_t)(ft.ndim == 2 ? ft.shape[1] : 1);
        t[i].ndim = ft.ndim;
        t[i].shape[0] = (int64_t)ft.shape[0];
        t[i].shape[1] = ft.ndim == 2 ? (int64_t)ft.shape[1] : 0;
    }
    *n = (int)count;
    return t;
}

static int64_t numel_of(const tdesc *t)
{
    return t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
}

/* phi3's longrope (configuration_phi3.py): {"type": "longrope", short_factor,
 * long_factor} of n numbers each, short 1 + i / (4 n), long rising from 1 to
 * about the factor as Phi-3's do; replaces rs (rope_type, factor). */
static json_t *synth_longrope(int n, json_t *rs)
{
    json_t *lr = json_object(), *sf = json_array(), *lf = json_array();
    double factor = json_real_value(json_object_get(rs, "factor"));
    int i;
    json_decref(rs);
    for (i = 0; i < n; i++) {
        json_array_append_new(sf, json_real(1.0 + i / (4.0 * n)));
        json_array_append_new(lf, json_real(1.0 + (factor - 1.0) * i / (n > 1 ? n - 1 : 1)));
    }
    json_object_set_new(lr, "type", json_string("longrope"));
    json_object_set_new(lr, "short_factor", sf);
    json_object_set_new(lr, "long_factor", lf);
    return lr;
}

static int write_config(const spruce_synth_config *c, const spruce_synth_family *f,
                        const char *path)
{
    static const char *rope_names[] = {"default", "linear", "dynamic", "yarn", "llama3",
                                       "longrope"};
    const spruce_family *fam = spruce_family_find(fam_type(f));
    json_t *j = json_object();
    int rc = 0;
    if (!j)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    json_object_set_new(j, "architectures", json_pack("[s]", fam->architecture));
    json_object_set_new(j, "model_type", json_string(fam->model_type));
    if ((f && f->head_dim > 0) || fam->default_head_dim)   /* else hidden / heads */
        json_object_set_new(j, "head_dim", json_integer(fam_head_dim(c, f)));
    if (f && f->rope != SPRUCE_ROPE_DEFAULT) {
        double factor = fam_factor(f);
        json_t *rs = json_pack("{s:s, s:f}", "rope_type", rope_names[f->rope], "factor", factor);
        if (f->rope == SPRUCE_ROPE_LLAMA3) {
            int orig = (int)(c->max_position / factor);
            json_object_set_new(rs, "low_freq_factor", json_real(1.0));
            json_object_set_new(rs, "high_freq_factor", json_real(4.0));
            json_object_set_new(rs, "original_max_position_embeddings",
                                json_integer(orig > 0 ? orig : 1));
        }
        if (f->rope == SPRUCE_ROPE_LONGROPE)
            rs = synth_longrope(fam_head_dim(c, f) / 2, rs);
        json_object_set_new(j, "rope_scaling", rs);
    }
    if (fam->phi3) {   /* the context before longrope: max_position / factor */
        int orig = f && f->rope == SPRUCE_ROPE_LONGROPE ? (int)(c->max_position / fam_factor(f))
                                                         : c->max_position;
        json_object_set_new(j, "original_max_position_embeddings",
                            json_integer(orig > 0 ? orig : 1));
    }
    if (fam->window_switch_key)
        json_object_set_new(j, fam->window_switch_key, json_false());
    json_object_set_new(j, "hidden_size", json_integer(c->hidden));
    json_object_set_new(j, fam->opt ? "ffn_dim" : "intermediate_size",
                        json_integer(c->intermediate));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->heads));
    if (!fam->opt)
        json_object_set_new(j, "num_key_value_heads", json_integer(c->kv_heads));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_position));
    if (!fam->opt) {
        json_object_set_new(j, "rms_norm_eps", json_real(1e-5));
        json_object_set_new(j, "rope_theta", json_real(fam->gemma == 3 ? 1e6 : 10000.0));
    }
    if (fam->opt) {   /* configuration_opt.py's keys, as OPT-125m has them */
        json_object_set_new(j, "activation_function", json_string("relu"));
        json_object_set_new(j, "do_layer_norm_before", json_true());
        json_object_set_new(j, "enable_bias", json_true());
        json_object_set_new(j, "layer_norm_elementwise_affine", json_true());
        json_object_set_new(j, "word_embed_proj_dim", json_integer(c->hidden));
    } else if (fam->gemma) {
        int w = c->max_position / 4;
        json_object_set_new(j, "hidden_activation", json_string("gelu_pytorch_tanh"));
        json_object_set_new(j, "query_pre_attn_scalar", json_integer(fam_head_dim(c, f)));
        json_object_set_new(j, "sliding_window", json_integer(w > 0 ? w : 1));
        if (fam->gemma == 2) {
            json_object_set_new(j, "attn_logit_softcapping", json_real(50.0));
            json_object_set_new(j, "final_logit_softcapping", json_real(30.0));
        } else {
            json_object_set_new(j, "sliding_window_pattern",
                                json_integer(c->layers >= 6 ? 6 : 2));
            json_object_set_new(j, "rope_local_base_freq", json_real(10000.0));
        }
    } else {
        json_object_set_new(j, "hidden_act", json_string("silu"));
    }
    if (fam->attention_bias_key)
        json_object_set_new(j, fam->attention_bias_key, json_false());
    if (fam->moe) {
        int E, k, w;
        fam_experts(c, f, &E, &k, &w);
        json_object_set_new(j, fam->experts_key, json_integer(E));
        json_object_set_new(j, "num_experts_per_tok", json_integer(k));
        if (fam->moe == 2) {   /* qwen3_moe: the width and the MoE layers are keys */
            json_object_set_new(j, "moe_intermediate_size", json_integer(w));
            json_object_set_new(j, "norm_topk_prob", json_true());
            json_object_set_new(j, "decoder_sparse_step", json_integer(1));
            json_object_set_new(j, "mlp_only_layers", json_array());
        }
    }
    json_object_set_new(j, "tie_word_embeddings", json_boolean(fam->gemma != 0 || fam->opt));
    json_object_set_new(j, "torch_dtype", json_string(torch_str(c->dtype)));
    json_object_set_new(j, "bos_token_id", json_integer(1));
    json_object_set_new(j, "eos_token_id", json_integer(2));
    if (json_dump_file(j, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10)))
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot write", path);
    json_decref(j);
    return rc;
}

/* The safetensors header for tensors t (in order, packed), padded with spaces
 * so that the data section starts at a multiple of 8 bytes. */
static char *make_header(const tdesc *t, int n, spruce_dtype dt, size_t *len)
{
    json_t *root = json_object(), *meta = json_object();
    size_t item = dt == SPRUCE_DTYPE_F32 ? 4 : 2, l;
    uint64_t off = 0;
    char *s, *p;
    int i;
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    for (i = 0; i < n; i++) {
        uint64_t nb = (uint64_t)numel_of(&t[i]) * item;
        json_t *e = t[i].ndim == 2
                        ? json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", dtype_str(dt), "shape",
                                    (json_int_t)t[i].shape[0], (json_int_t)t[i].shape[1],
                                    "data_offsets", (json_int_t)off, (json_int_t)(off + nb))
                        : json_pack("{s:s, s:[I], s:[I,I]}", "dtype", dtype_str(dt), "shape",
                                    (json_int_t)t[i].shape[0], "data_offsets", (json_int_t)off,
                                    (json_int_t)(off + nb));
        json_object_set_new(root, t[i].name, e);
        off += nb;
    }
    s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return NULL;
    l = strlen(s);
    p = realloc(s, l + 8);
    if (!p) {
        free(s);
        return NULL;
    }
    while ((8 + l) % 8)
        p[l++] = ' ';
    p[l] = '\0';
    *len = l;
    return p;
}

int spruce_synth_write(const char *outdir, const spruce_synth_config *c, int force)
{
    return spruce_synth_write_family(outdir, c, NULL, force);
}

int spruce_synth_write_family(const char *outdir, const spruce_synth_config *c,
                              const spruce_synth_family *fam, int force)
{
    tdesc *t = NULL;
    int n = 0, i, rc = 0, fd = -1;
    char *tmp = NULL, *path = NULL, *hdr = NULL;
    size_t hlen = 0, item;
    float *f = NULL;
    uint8_t *bytes = NULL;
    uint64_t pos;

    if (!outdir || !c)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_synth_write: NULL argument");
    if ((rc = check_config(c, fam)))
        return rc;
    item = c->dtype == SPRUCE_DTYPE_F32 ? 4 : 2;
    t = describe(c, fam, &n);
    f = malloc((size_t)RUN * BATCH * sizeof *f);
    bytes = malloc((size_t)RUN * BATCH * item);
    if (!t || !f || !bytes || !(hdr = make_header(t, n, c->dtype, &hlen))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
        goto done;
    }
    if ((rc = spruce__outdir_begin(outdir, force, NULL, &tmp)))
        goto done;
    if (!(path = spruce__path_join(tmp, "config.json"))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
        goto done;
    }
    if ((rc = write_config(c, fam, path)))
        goto done;
    free(path);
    if (!(path = spruce__path_join(tmp, "model.safetensors"))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
        goto done;
    }
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot create", path);
        goto done;
    }
    {
        uint8_t le[8];
        for (i = 0; i < 8; i++)
            le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
        if ((rc = spruce__pwrite_all(fd, le, 8, 0, path)) ||
            (rc = spruce__pwrite_all(fd, hdr, hlen, 8, path)))
            goto done;
    }
    pos = 8 + hlen;
    for (i = 0; i < n; i++) {
        /* gemma, opt: the embedding is also the head, of scale 1 / sqrt(hidden) */
        int gemma = spruce_family_find(fam_type(fam))->gemma != 0;
        int tied = gemma || spruce_family_find(fam_type(fam))->opt;
        int64_t numel = numel_of(&t[i]), start;
        uint64_t ts = name_seed(c->seed, t[i].name);
        float scale = t[i].kind == 1   ? 0.05f
                      : t[i].kind == 2 ? (tied ? (float)(1.0 / sqrt((double)c->hidden)) : 1.0f)
                      : t[i].kind == 3 ? 0.01f
                                       : (float)(1.0 / sqrt((double)t[i].fan_in));
        float shift = t[i].kind == 1 && !gemma ? 1.0f : 0.0f;   /* gemma: (1 + w) */
        for (start = 0; start < numel; start += (int64_t)RUN * BATCH) {
            int64_t cnt = numel - start < (int64_t)RUN * BATCH ? numel - start
                                                               : (int64_t)RUN * BATCH;
            int nruns = (int)((cnt + RUN - 1) / RUN), r;
#pragma omp parallel for schedule(static)
            for (r = 0; r < nruns; r++) {
                int64_t k, m = cnt - (int64_t)r * RUN < RUN ? cnt - (int64_t)r * RUN : RUN;
                float *x = f + (size_t)r * RUN;
                normals(mix64(ts + (uint64_t)(start / RUN + r)), x, (size_t)m);
                for (k = 0; k < m; k++)
                    x[k] = shift + scale * x[k];
                if (c->dtype == SPRUCE_DTYPE_F32)
                    memcpy(bytes + (size_t)r * RUN * 4, x, (size_t)m * 4);
                else if (c->dtype == SPRUCE_DTYPE_F16)
                    spruce_f32_to_f16_n(x, (uint16_t *)bytes + (size_t)r * RUN, (size_t)m);
                else
                    spruce_f32_to_bf16_n(x, (uint16_t *)bytes + (size_t)r * RUN, (size_t)m);
            }
            if (spruce__cancelled()) {
                rc = spruce__seterr(SPRUCE_ECANCELED, "%s: stopped while writing %s", outdir,
                                    t[i].name);
                goto done;
            }
            if ((rc = spruce__pwrite_all(fd, bytes, (size_t)cnt * item, pos, path)))
                goto done;
            pos += (uint64_t)cnt * item;
        }
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot sync", path);
        goto done;
    }
    fd = -1;
    if ((rc = spruce__outdir_commit(tmp, outdir, force)))
        goto done;
    free(tmp);
    tmp = NULL;
done:
    if (fd >= 0)
        close(fd);
    if (tmp)
        spruce__outdir_abort(tmp);
    free(tmp);
    free(path);
    free(hdr);
    free(bytes);
    free(f);
    free(t);
    return rc;
}

int64_t spruce_synth_nparams(const spruce_synth_config *c)
{
    int64_t hd = c->hidden / (c->heads ? c->heads : 1), H = c->hidden, I = c->intermediate;
    int64_t per = 2 * H + c->heads * hd * H * 2 + 2 * c->kv_heads * hd * H + 3 * H * I;
    return 2 * (int64_t)c->vocab * H + H + c->layers * per;
}

int64_t spruce_synth_family_nparams(const spruce_synth_config *c, const spruce_synth_family *f)
{
    spruce_config mc;
    spruce_family_tensor ft;
    int64_t total = 0;
    size_t i;
    model_config(c, f, &mc);
    for (i = 0; spruce_family_tensor_at(&mc, i, &ft) == 1; i++)
        total += (int64_t)ft.shape[0] * (ft.ndim == 2 ? (int64_t)ft.shape[1] : 1);
    return total;
}
