/* config.c: config.json of a Hugging Face LLaMA-family checkpoint (jansson). */
#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "spruce_family.h"
#include "spruce_files.h"

/* An integer key; required keys must be present, optional ones keep *out. */
static int get_int(const json_t *root, const char *origin, const char *key, int required,
                   int lo, int *out)
{
    const json_t *v = json_object_get(root, key);
    json_int_t i;
    if (!v || json_is_null(v)) {
        if (required)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s' is missing", origin, key);
        return 0;
    }
    if (!json_is_integer(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected an integer", origin,
                              key);
    i = json_integer_value(v);
    if (i < lo || i > (1 << 30))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected an integer >= %d, "
                              "found %lld", origin, key, lo, (long long)i);
    *out = (int)i;
    return 0;
}

static int get_double(const json_t *root, const char *origin, const char *key, int required,
                      double *out)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s' is missing", origin, key);
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected a positive number",
                              origin, key);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(const json_t *root, const char *origin, const char *key, int *out)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected true or false", origin,
                              key);
    *out = json_is_true(v);
    return 0;
}

static int parse(const json_t *root, const char *origin, spruce_config *c)
{
    const json_t *v;
    const char *type;
    const spruce_family *f;
    int rc, on = 0;

    memset(c, 0, sizeof *c);
    if (!json_is_object(root))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: expected a JSON object", origin);

    v = json_object_get(root, "model_type");
    if (!v)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'model_type' is missing "
                              "(supported: %s)", origin, spruce_family_supported());
    if (!json_is_string(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'model_type': expected a string",
                              origin);
    type = json_string_value(v);
    if (!(f = spruce_family_find(type)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: model_type '%s' is not supported "
                              "(supported: %s)", origin, type, spruce_family_supported());
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    c->family = f;

    if ((rc = get_int(root, origin, "hidden_size", 1, 1, &c->hidden_size)) ||
        (rc = get_int(root, origin, "intermediate_size", 1, 1, &c->intermediate_size)) ||
        (rc = get_int(root, origin, "num_hidden_layers", 1, 1, &c->num_hidden_layers)) ||
        (rc = get_int(root, origin, "num_attention_heads", 1, 1, &c->num_attention_heads)) ||
        (rc = get_int(root, origin, "vocab_size", 1, 1, &c->vocab_size)) ||
        (rc = get_int(root, origin, "max_position_embeddings", 1, 1,
                      &c->max_position_embeddings)))
        return rc;
    c->num_key_value_heads = c->num_attention_heads;
    if ((rc = get_int(root, origin, "num_key_value_heads", 0, 1, &c->num_key_value_heads)))
        return rc;
    if (c->num_attention_heads % c->num_key_value_heads)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: num_attention_heads %d is not a multiple "
                              "of num_key_value_heads %d", origin, c->num_attention_heads,
                              c->num_key_value_heads);
    c->head_dim = 0;
    if ((rc = get_int(root, origin, "head_dim", 0, 1, &c->head_dim)))
        return rc;
    if (!c->head_dim) {
        if (c->hidden_size % c->num_attention_heads)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: hidden_size %d is not a multiple of "
                                  "num_attention_heads %d", origin, c->hidden_size,
                                  c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    /* Widths are ints downstream (BLAS takes ints): keep them below 2^30. */
    if ((int64_t)c->num_attention_heads * c->head_dim > (1 << 30))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: num_attention_heads %d x head_dim %d "
                              "is too large (at most 2^30)", origin, c->num_attention_heads,
                              c->head_dim);
    if (c->head_dim % 2)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: head_dim %d must be even for rotary "
                              "embeddings", origin, c->head_dim);

    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    if ((rc = get_double(root, origin, "rms_norm_eps", 0, &c->rms_norm_eps)) ||
        (rc = get_double(root, origin, "rope_theta", 0, &c->rope_theta)) ||
        (rc = get_bool(root, origin, "tie_word_embeddings", &c->tie_word_embeddings)))
        return rc;

    v = json_object_get(root, "hidden_act");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'hidden_act': expected a string",
                                  origin);
        if (strcmp(json_string_value(v), "silu"))
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: hidden_act '%s' is not "
                                  "supported (supported: silu)", origin, json_string_value(v));
    }
    v = json_object_get(root, "rope_scaling");
    if (v && !json_is_null(v))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_scaling is not supported "
                              "(supported: rope_scaling null, plain rotary embeddings with "
                              "rope_theta)", origin);

    /* What the family's keys switch on (spruce_family.h). */
    c->qkv_bias = f->qkv_bias;
    if (f->attention_bias_key) {
        if ((rc = get_bool(root, origin, f->attention_bias_key, &on)))
            return rc;
        c->qkv_bias = c->o_bias = on;
    }
    if (f->mlp_bias_key && (rc = get_bool(root, origin, f->mlp_bias_key, &c->mlp_bias)))
        return rc;
    if (f->window_switch_key) {
        on = 0;
        if ((rc = get_bool(root, origin, f->window_switch_key, &on)))
            return rc;
        if (on)
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: %s true is not supported "
                                  "(supported: full causal attention)", origin,
                                  f->window_switch_key);
    }
    /* The window only matters for sequences longer than it: the forward
     * refuses those. */
    if (f->window_key &&
        (rc = get_int(root, origin, f->window_key, 0, 1, &c->sliding_window)))
        return rc;
    return 0;
}

int spruce_config_parse(const char *text, const char *origin, spruce_config *cfg)
{
    json_error_t err;
    json_t *root;
    int rc;
    if (!text || !cfg)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_config_parse: NULL argument");
    if (!origin)
        origin = "config.json";
    root = json_loads(text, 0, &err);
    if (!root)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: line %d column %d: %s", origin, err.line,
                              err.column, err.text);
    rc = parse(root, origin, cfg);
    json_decref(root);
    return rc;
}

int spruce_config_load(const char *path, spruce_config *cfg)
{
    char buf[4096];
    struct stat st;
    json_error_t err;
    json_t *root;
    int rc;
    if (!path || !cfg)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_config_load: NULL argument");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(buf, sizeof buf, "%s/config.json", path);
    else
        snprintf(buf, sizeof buf, "%s", path);
    if ((rc = spruce__check_regular(buf))) /* not found, a directory, a FIFO: before reading */
        return rc;
    root = json_load_file(buf, 0, &err);
    if (!root)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: line %d column %d: %s", buf, err.line,
                              err.column, err.text);
    rc = parse(root, buf, cfg);
    json_decref(root);
    return rc;
}
