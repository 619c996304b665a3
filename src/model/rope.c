/* rope.c: rotary embeddings with rope_scaling, as transformers computes them
 * (modeling_rope_utils.py: _compute_default_rope_parameters,
 * _compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters,
 * _compute_yarn_parameters, _compute_llama3_parameters, and the keys that
 * rope_config_validation reads for each type; modeling_llama.py:
 * LlamaRotaryEmbedding, dynamic_rope_update).
 *
 * With d = head_dim and base_i = rope_theta^(2i/d), i < d/2:
 *   default  inv_i = 1 / base_i
 *   linear   inv_i = 1 / (factor base_i)
 *   dynamic  for a sequence of L = max(T, max_pos) tokens the base is
 *            rope_theta (factor L / max_pos - (factor - 1))^(d / (d - 2))
 *            (L = max_pos changes nothing)
 *   yarn     f = factor, or max_pos / original when rope_scaling gives
 *            original_max_position_embeddings (o, else max_pos);
 *            corr(r) = d ln(o / (2 pi r)) / (2 ln rope_theta),
 *            low = max(floor(corr(beta_fast)), 0), high = min(ceil(corr(beta_slow)), d - 1)
 *            (no rounding when truncate is false), ramp_i = clamp((i - low) / (high - low), 0, 1),
 *            inv_i = ramp_i / (f base_i) + (1 - ramp_i) / base_i;
 *            cos and sin times attention_factor, else mscale(f, mscale) /
 *            mscale(f, mscale_all_dim) when both are given, else mscale(f, 1),
 *            mscale(s, m) = 1 for s <= 1, 0.1 m ln s + 1 otherwise
 *   llama3   wavelen_i = 2 pi base_i; o = original_max_position_embeddings:
 *            wavelen_i > o / low_freq_factor: inv_i / factor;
 *            wavelen_i < o / high_freq_factor: inv_i;
 *            between: (1 - s) inv_i / factor + s inv_i,
 *            s = (o / wavelen_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
 *   longrope (_compute_longrope_parameters, longrope_frequency_update;
 *            configuration_phi3.py): o = original_max_position_embeddings
 *            (top level; phi3 4096 when absent), f = max_pos / o:
 *            inv_i = 1 / (short_factor_i base_i), or 1 / (long_factor_i base_i)
 *            for a sequence longer than o; cos and sin times attention_factor,
 *            else sqrt(1 + ln f / ln o) when f > 1, else 1 (for every length).
 * d is the rotary dim: int(head_dim * partial_rotary_factor) (phi3), else head_dim. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rope.h"
#include "spruce_family.h"

#define TYPES "default, linear, dynamic, yarn, llama3, longrope (phi3)"

typedef struct {
    const char *name;
    spruce_rope_type type;
    const char *keys;          /* every key the type reads, for messages */
} rope_kind;

static const rope_kind kinds[] = {
    {"default", SPRUCE_ROPE_DEFAULT, "rope_type"},
    {"linear", SPRUCE_ROPE_LINEAR, "rope_type, factor"},
    {"dynamic", SPRUCE_ROPE_DYNAMIC, "rope_type, factor, original_max_position_embeddings"},
    {"yarn", SPRUCE_ROPE_YARN, "rope_type, factor, attention_factor, beta_fast, beta_slow, "
                               "mscale, mscale_all_dim, original_max_position_embeddings, "
                               "truncate"},
    {"llama3", SPRUCE_ROPE_LLAMA3, "rope_type, factor, low_freq_factor, high_freq_factor, "
                                   "original_max_position_embeddings"},
    /* factor is read by transformers only without a top-level
     * original_max_position_embeddings, which phi3 always has */
    {"longrope", SPRUCE_ROPE_LONGROPE, "rope_type, short_factor, long_factor, "
                                       "attention_factor, factor"},
};

#define NKINDS ((int)(sizeof kinds / sizeof kinds[0]))

/* Whether key is one of the comma-separated names in list. */
static int listed(const char *list, const char *key)
{
    size_t n = strlen(key);
    const char *p = list;
    if (n == 0) /* "" is no key (and strstr would find it everywhere) */
        return 0;
    while ((p = strstr(p, key))) {
        if ((p == list || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return 1;
        p += n;
    }
    return 0;
}

/* A number of rope_scaling: > 0 (or >= 0 with zero_ok), absent or null
 * keeps *out; 1 when it was present. */
static int number(const json_t *rs, const char *origin, const char *key, int required,
                  int zero_ok, double *out, int *rc)
{
    const json_t *v = json_object_get(rs, key);
    double x;
    *rc = 0;
    if (!v || json_is_null(v)) {
        if (required)
            *rc = spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key '%s' is missing "
                                 "(required for this rope_type)", origin, key);
        return 0;
    }
    x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || x < 0 || (x == 0 && !zero_ok)) {
        *rc = spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key '%s': expected a "
                             "%s number", origin, key, zero_ok ? "non-negative" : "positive");
        return 0;
    }
    *out = x;
    return 1;
}

/* c->rotary_dim from partial_rotary_factor (apply_rotary_pos_emb of phi3
 * rotates cos.shape[-1] = int(head_dim * factor) dims; llama's and the others'
 * rotate the whole head, so there the key is refused unless 1). */
static int rotary_dim(const json_t *root, const char *origin, spruce_config *c)
{
    const json_t *v = json_object_get(root, "partial_rotary_factor");
    double x;
    c->rotary_dim = c->head_dim;
    if (!v || json_is_null(v))
        return 0;
    x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(x > 0 && x <= 1))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'partial_rotary_factor': expected "
                              "a number in (0, 1]", origin);
    if (x == 1.0)
        return 0;
    if (!(c->family && c->family->phi3))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: partial_rotary_factor other than "
                              "1 is not supported for model_type %s (supported: phi3; the "
                              "others rotate the whole head_dim)", origin, c->model_type);
    c->rotary_dim = (int)(c->head_dim * x);
    if (c->rotary_dim < 2 || c->rotary_dim % 2)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: partial_rotary_factor %g x head_dim %d "
                              "gives %d rotary dims: expected an even number >= 2", origin, x,
                              c->head_dim, c->rotary_dim);
    return 0;
}

/* A list of rotary_dim / 2 positive numbers (configuration_phi3.py checks
 * the length). */
static int factor_list(const json_t *rs, const char *origin, const char *key, int n,
                       double *out)
{
    const json_t *v = json_object_get(rs, key), *e;
    size_t i;
    if (!v || !json_is_array(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key '%s': expected a "
                              "list of %d numbers (required for rope_type longrope)", origin,
                              key, n);
    if (json_array_size(v) != (size_t)n)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key '%s': expected %d "
                              "numbers (rotary dims / 2), found %zu", origin, key, n,
                              json_array_size(v));
    json_array_foreach(v, i, e) {
        double x = json_is_number(e) ? json_number_value(e) : NAN;
        if (!isfinite(x) || x <= 0)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: %s[%zu]: expected a "
                                  "positive number", origin, key, i);
        out[i] = x;
    }
    return 0;
}

/* longrope: the factor lists, attention_factor, and the original context
 * (top-level original_max_position_embeddings; phi3's default 4096). */
static int longrope_keys(const json_t *root, const json_t *rs, const char *origin,
                         spruce_config *c)
{
    spruce_rope_scaling *r = &c->rope;
    const json_t *v = json_object_get(root, "original_max_position_embeddings");
    int n = c->rotary_dim / 2, rc;
    if (n > SPRUCE_MAX_LONGROPE)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_type longrope with %d rotary "
                              "dims is not supported (supported: at most %d)", origin,
                              c->rotary_dim, 2 * SPRUCE_MAX_LONGROPE);
    r->nfactors = n;
    if ((rc = factor_list(rs, origin, "short_factor", n, r->short_factor)) ||
        (rc = factor_list(rs, origin, "long_factor", n, r->long_factor)))
        return rc;
    number(rs, origin, "attention_factor", 0, 0, &r->attention_factor, &rc);
    if (rc)
        return rc;
    r->factor = 0;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > SPRUCE_MAX_POSITIONS)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key "
                                  "'original_max_position_embeddings': expected an integer in "
                                  "1..%d", origin, SPRUCE_MAX_POSITIONS);
        r->original_max_position_embeddings = (int)json_integer_value(v);
    } else if (c->family && c->family->phi3) {
        r->original_max_position_embeddings = 4096;   /* configuration_phi3.py */
    } else {
        /* without the top-level key transformers takes rope_scaling's factor */
        r->original_max_position_embeddings = c->max_position_embeddings;
        number(rs, origin, "factor", 1, 0, &r->factor, &rc);
        return rc;
    }
    r->factor = (double)c->max_position_embeddings / r->original_max_position_embeddings;
    return 0;
}

int spruce__rope_parse(const json_t *root, const char *origin, spruce_config *c)
{
    const json_t *rs = json_object_get(root, "rope_scaling"), *v, *val;
    spruce_rope_scaling *r = &c->rope;
    const rope_kind *k = NULL;
    const char *type, *key;
    double x = 0;
    int rc = 0, i;

    memset(r, 0, sizeof *r);
    r->type = SPRUCE_ROPE_DEFAULT;
    r->beta_fast = 32;
    r->beta_slow = 1;
    r->truncate = 1;
    if ((rc = rotary_dim(root, origin, c)))
        return rc;
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: expected an object or "
                              "null", origin);
    v = json_object_get(rs, "rope_type");
    if (!v || json_is_null(v))
        v = json_object_get(rs, "type");
    if (!v || json_is_null(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key 'rope_type' (or "
                              "'type') is missing (supported: %s)", origin, TYPES);
    if (!json_is_string(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key 'rope_type': "
                              "expected a string", origin);
    type = json_string_value(v);
    /* configuration_phi3.py: the older names of longrope */
    if (c->family && c->family->phi3 && (!strcmp(type, "su") || !strcmp(type, "yarn")))
        type = "longrope";
    for (i = 0; i < NKINDS; i++)
        if (!strcmp(kinds[i].name, type))
            k = &kinds[i];
    if (!k)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_scaling: rope_type '%s' is "
                              "not supported (supported: %s)", origin, type, TYPES);
    r->type = k->type;
    if (c->family && c->family->phi3 && r->type != SPRUCE_ROPE_DEFAULT &&
        r->type != SPRUCE_ROPE_LONGROPE)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_scaling: rope_type '%s' is "
                              "not supported for phi3 (supported: default, longrope, as "
                              "configuration_phi3.py)", origin, type);
    if (!(c->family && c->family->phi3) && r->type == SPRUCE_ROPE_LONGROPE)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_scaling: rope_type longrope "
                              "is supported for model_type phi3 only (supported here: default, "
                              "linear, dynamic, yarn, llama3)", origin);
    /* Every key must be one this type reads: another would change the maths
     * in some version of transformers, or be a mistake. */
    json_object_foreach((json_t *)rs, key, val) {
        if (!strcmp(key, "rope_type") || !strcmp(key, "type") || !strcmp(key, "rope_theta"))
            continue;
        if (!listed(k->keys, key))
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: rope_scaling: key '%s' is not "
                                  "supported for rope_type '%s' (supported keys: %s)", origin,
                                  key, type, k->keys);
    }
    /* rope_theta inside rope_scaling (the newer layout) wins when set */
    if (number(rs, origin, "rope_theta", 0, 0, &x, &rc))
        c->rope_theta = x;
    if (rc)
        return rc;
    if (r->type == SPRUCE_ROPE_DEFAULT)
        return 0;
    if (r->type == SPRUCE_ROPE_LONGROPE)
        return longrope_keys(root, rs, origin, c);
    number(rs, origin, "factor", 1, 0, &r->factor, &rc);
    if (rc)
        return rc;
    if (number(rs, origin, "original_max_position_embeddings", r->type == SPRUCE_ROPE_LLAMA3,
               0, &x, &rc)) {
        if (x != floor(x) || x > (1 << 30))
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key "
                                  "'original_max_position_embeddings': expected an integer",
                                  origin);
        r->original_max_position_embeddings = (int)x;
    }
    if (rc)
        return rc;
    if (r->type == SPRUCE_ROPE_DYNAMIC && c->head_dim <= 2)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_type dynamic needs head_dim > 2, "
                              "found %d", origin, c->head_dim);
    if (r->type == SPRUCE_ROPE_LLAMA3) {
        number(rs, origin, "low_freq_factor", 1, 0, &r->low_freq_factor, &rc);
        if (!rc)
            number(rs, origin, "high_freq_factor", 1, 0, &r->high_freq_factor, &rc);
        if (rc)
            return rc;
        if (r->high_freq_factor <= r->low_freq_factor)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: high_freq_factor %g "
                                  "must be larger than low_freq_factor %g", origin,
                                  r->high_freq_factor, r->low_freq_factor);
    }
    if (r->type == SPRUCE_ROPE_YARN) {
        /* beta_fast, beta_slow, mscale, mscale_all_dim: 0 means absent, as
         * transformers' `get(...) or default` reads them */
        double bf = 0, bs = 0;
        number(rs, origin, "beta_fast", 0, 1, &bf, &rc);
        if (!rc)
            number(rs, origin, "beta_slow", 0, 1, &bs, &rc);
        if (!rc)
            number(rs, origin, "attention_factor", 0, 0, &r->attention_factor, &rc);
        if (!rc)
            number(rs, origin, "mscale", 0, 1, &r->mscale, &rc);
        if (!rc)
            number(rs, origin, "mscale_all_dim", 0, 1, &r->mscale_all_dim, &rc);
        if (rc)
            return rc;
        if (bf > 0)
            r->beta_fast = bf;
        if (bs > 0)
            r->beta_slow = bs;
        v = json_object_get(rs, "truncate");
        if (v && !json_is_null(v)) {
            if (!json_is_boolean(v))
                return spruce__seterr(SPRUCE_EFORMAT, "file %s: rope_scaling: key 'truncate': "
                                      "expected true or false", origin);
            r->truncate = json_is_true(v);
        }
    }
    return 0;
}

long spruce__rope_table_len(const spruce_config *c, long T)
{
    if (c->rope.type == SPRUCE_ROPE_LONGROPE)   /* long factors beyond the original */
        return T > c->rope.original_max_position_embeddings
                   ? c->rope.original_max_position_embeddings + 1 : 0;
    if (c->rope.type != SPRUCE_ROPE_DYNAMIC)
        return 0;
    return T > c->max_position_embeddings ? T : c->max_position_embeddings;
}

static double yarn_mscale(double s, double m)
{
    return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0;
}

/* d ln(o / (2 pi r)) / (2 ln base): the dimension that turns r times over o positions */
static double yarn_corr_dim(double r, int d, double base, double o)
{
    return d * log(o / (r * 2 * M_PI)) / (2 * log(base));
}

void spruce__rope_inv_freq(const spruce_config *c, long L, double *inv, double *attention)
{
    const spruce_rope_scaling *r = &c->rope;
    int d = c->rotary_dim > 0 ? c->rotary_dim : c->head_dim, half = d / 2, i;
    double base = c->rope_theta, maxp = c->max_position_embeddings;
    *attention = 1.0;
    if (r->type == SPRUCE_ROPE_DYNAMIC) {
        double len = L > c->max_position_embeddings ? (double)L : maxp;
        base *= pow(r->factor * len / maxp - (r->factor - 1), (double)d / (d - 2));
    }
    for (i = 0; i < half; i++)
        inv[i] = 1.0 / pow(base, (double)(2 * i) / d);
    switch (r->type) {
    case SPRUCE_ROPE_DEFAULT:
    case SPRUCE_ROPE_DYNAMIC:
        break;
    case SPRUCE_ROPE_LONGROPE: {
        const double *ext = L > r->original_max_position_embeddings ? r->long_factor
                                                                     : r->short_factor;
        double f = r->factor;
        for (i = 0; i < half; i++)
            inv[i] /= ext[i];
        if (r->attention_factor > 0)
            *attention = r->attention_factor;
        else if (f > 1)
            *attention = sqrt(1 + log(f) / log((double)r->original_max_position_embeddings));
        break;
    }
    case SPRUCE_ROPE_LINEAR:
        for (i = 0; i < half; i++)
            inv[i] /= r->factor;
        break;
    case SPRUCE_ROPE_YARN: {
        double f = r->factor, o = maxp, lo, hi;
        if (r->original_max_position_embeddings > 0) {
            o = r->original_max_position_embeddings;
            f = maxp / o;
        }
        if (r->attention_factor > 0)
            *attention = r->attention_factor;
        else if (r->mscale > 0 && r->mscale_all_dim > 0)
            *attention = yarn_mscale(f, r->mscale) / yarn_mscale(f, r->mscale_all_dim);
        else
            *attention = yarn_mscale(f, 1.0);
        lo = yarn_corr_dim(r->beta_fast, d, base, o);
        hi = yarn_corr_dim(r->beta_slow, d, base, o);
        if (r->truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        lo = lo > 0 ? lo : 0;
        hi = hi < d - 1 ? hi : d - 1;
        if (lo == hi)
            hi += 0.001;
        for (i = 0; i < half; i++) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            /* ramp 0: extrapolation (inv), 1: interpolation (inv / f) */
            inv[i] = inv[i] / f * ramp + inv[i] * (1 - ramp);
        }
        break;
    }
    case SPRUCE_ROPE_LLAMA3: {
        double o = r->original_max_position_embeddings;
        double low_wl = o / r->low_freq_factor, high_wl = o / r->high_freq_factor;
        for (i = 0; i < half; i++) {
            double wl = 2 * M_PI / inv[i];
            if (wl > low_wl) {
                inv[i] /= r->factor;
            } else if (!(wl < high_wl)) {
                double s = (o / wl - r->low_freq_factor) /
                           (r->high_freq_factor - r->low_freq_factor);
                inv[i] = (1 - s) * inv[i] / r->factor + s * inv[i];
            }
        }
        break;
    }
    }
}

int spruce__rope_fill(const spruce_config *c, long L, int p0, int npos, float *cs, float *sn)
{
    size_t stride = (size_t)c->head_dim / 2, i;
    size_t half = (size_t)(c->rotary_dim > 0 ? c->rotary_dim : c->head_dim) / 2;
    double att, *inv = malloc((half ? half : 1) * sizeof *inv);
    int p;
    if (!inv)
        return spruce__seterr(SPRUCE_ENOMEM, "rotary tables: %zu frequencies", half);
    spruce__rope_inv_freq(c, L, inv, &att);
    for (i = 0; i < half; i++) {
        float fi = (float)inv[i], a = (float)att;
        for (p = 0; p < npos; p++) {
            float ang = (float)(p0 + p) * fi;
            cs[(size_t)p * stride + i] = (float)cos((double)ang) * a;
            sn[(size_t)p * stride + i] = (float)sin((double)ang) * a;
        }
    }
    free(inv);
    return 0;
}

int spruce_config_length_warning(const spruce_config *c, long T, char *buf, size_t size)
{
    static const char *names[] = {"default", "linear", "dynamic", "yarn", "llama3",
                                  "longrope"};
    if (!c || T <= c->max_position_embeddings)
        return 0;
    if (!buf || !size)
        return 1;
    if (c->learned_positions)   /* OPT: the forward refuses such a sequence */
        snprintf(buf, size, "sequences of %ld tokens are longer than max_position_embeddings "
                 "%d: the learned positional table has no rows beyond it", T,
                 c->max_position_embeddings);
    else if (c->rope.type == SPRUCE_ROPE_DYNAMIC)
        snprintf(buf, size, "sequences of %ld tokens are longer than max_position_embeddings "
                 "%d: rope_type dynamic rescales the rotary base for this length, as "
                 "transformers does", T, c->max_position_embeddings);
    else
        snprintf(buf, size, "sequences of %ld tokens are longer than max_position_embeddings "
                 "%d: positions beyond it are computed as transformers computes them "
                 "(rope_type %s, extrapolated), but the model was not trained on them", T,
                 c->max_position_embeddings, names[c->rope.type]);
    return 1;
}

int spruce__rope_local_tables(const spruce_config *c, int npos, float **cs, float **sn)
{
    spruce_config local;
    size_t n = (size_t)npos * (size_t)(c->head_dim / 2);
    *cs = *sn = NULL;
    if (c->rope_local_theta <= 0)
        return 0;
    local = *c;
    local.rope_theta = c->rope_local_theta;
    memset(&local.rope, 0, sizeof local.rope);   /* SPRUCE_ROPE_DEFAULT */
    *cs = malloc((n ? n : 1) * sizeof(float));
    *sn = malloc((n ? n : 1) * sizeof(float));
    if (!*cs || !*sn || spruce__rope_fill(&local, 0, 0, npos, *cs, *sn)) {
        free(*cs);
        free(*sn);
        *cs = *sn = NULL;
        return spruce__seterr(SPRUCE_ENOMEM, "rope tables of %d positions", npos);
    }
    return 0;
}
