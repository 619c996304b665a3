/* layer_plan.c: `--layer-sparsity FILE.json`, a map from tensor-name regex to
 * what the matching layers get (spruce_plan.h).  The file's order is the
 * rules' order: jansson keeps an object's keys in insertion order and
 * json_object_foreach walks them so (jansson >= 2.8; JSON_PRESERVE_ORDER is
 * then a no-op kept for older callers). */
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_internal.h"
#include "spruce_error.h"
#include "spruce_files.h"
#include "spruce_plan.h"

typedef struct {
    char *key;
    regex_t re;
    spruce_layer_target t;
} rule;

struct spruce_layer_rules {
    char *origin;
    int n;
    rule *r;
};

const char *spruce_layer_target_str(const spruce_layer_target *t, char *buf, size_t size)
{
    if (!t || t->kind == SPRUCE_TARGET_DEFAULT)
        snprintf(buf, size, "default");
    else if (t->kind == SPRUCE_TARGET_DENSE)
        snprintf(buf, size, "dense");
    else if (t->kind == SPRUCE_TARGET_NM)
        snprintf(buf, size, "%d:%d", t->n, t->m);
    else
        snprintf(buf, size, "%.6g", t->sparsity);
    return buf;
}

void spruce_layer_rules_free(spruce_layer_rules *r)
{
    int i;
    if (!r)
        return;
    for (i = 0; i < r->n; i++) {
        regfree(&r->r[i].re);
        free(r->r[i].key);
    }
    free(r->r);
    free(r->origin);
    free(r);
}

/* The target a value names, or SPRUCE_EINVAL naming the file and the key. */
static int parse_value(const json_t *v, const char *origin, const char *key,
                       spruce_layer_target *t)
{
    memset(t, 0, sizeof *t);
    if (json_is_number(v)) {
        double s = json_number_value(v);
        if (s >= 0.0 && s < 1.0) {
            t->kind = SPRUCE_TARGET_SPARSITY;
            t->sparsity = s;
            return 0;
        }
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        int a, b, len = 0;
        if (!strcmp(s, "dense")) {
            t->kind = SPRUCE_TARGET_DENSE;
            return 0;
        }
        if (sscanf(s, "%d:%d%n", &a, &b, &len) == 2 && s[len] == '\0' && a > 0 && a < b &&
            b <= 256) {
            t->kind = SPRUCE_TARGET_NM;
            t->n = a;
            t->m = b;
            return 0;
        }
    }
    return spruce__seterr(SPRUCE_EINVAL, "file %s: key '%s': expected a sparsity in [0, 1), an "
                          "\"N:M\" pattern (0 < N < M <= 256) or \"dense\"", origin, key);
}

static int parse_root(json_t *root, const json_error_t *err, const char *origin,
                      spruce_layer_rules **out)
{
    spruce_layer_rules *r = NULL;
    const char *key;
    json_t *v;
    char what[600];
    int rc = 0;
    if (!root)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: line %d column %d: %s", origin, err->line,
                              err->column, err->text);
    if (!json_is_object(root) || json_object_size(root) == 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "file %s: expected a non-empty JSON object mapping "
                            "tensor-name regexes to a sparsity, \"N:M\" or \"dense\"", origin);
        goto done;
    }
    if (!(r = calloc(1, sizeof *r)) || !(r->origin = strdup(origin)) ||
        !(r->r = calloc(json_object_size(root), sizeof *r->r))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "file %s: %zu rules", origin, json_object_size(root));
        goto done;
    }
    json_object_foreach(root, key, v) {
        rule *ru = &r->r[r->n];
        if ((rc = parse_value(v, origin, key, &ru->t)))
            goto done;
        snprintf(what, sizeof what, "file %s: key", origin);
        if ((rc = spruce__regcomp(&ru->re, key, what)))
            goto done;
        if (!(ru->key = strdup(key))) {
            regfree(&ru->re);
            rc = spruce__seterr(SPRUCE_ENOMEM, "file %s: key '%s'", origin, key);
            goto done;
        }
        r->n++;
    }
done:
    json_decref(root);
    if (rc) {
        spruce_layer_rules_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int spruce_layer_rules_load(const char *path, spruce_layer_rules **out)
{
    json_error_t err;
    int rc;
    if (!path || !out)
        return spruce__seterr(SPRUCE_EINVAL, "layer rules: NULL argument");
    *out = NULL;
    if ((rc = spruce__check_regular(path)))
        return rc;
    /* duplicate keys are refused: which of two rules comes first is not defined */
    return parse_root(json_load_file(path, JSON_REJECT_DUPLICATES, &err), &err, path, out);
}

int spruce_layer_rules_parse(const char *text, const char *origin, spruce_layer_rules **out)
{
    json_error_t err;
    if (!text || !out)
        return spruce__seterr(SPRUCE_EINVAL, "layer rules: NULL argument");
    *out = NULL;
    return parse_root(json_loads(text, JSON_REJECT_DUPLICATES, &err), &err,
                      origin ? origin : "layer rules", out);
}

int spruce_layer_rules_count(const spruce_layer_rules *r)
{
    return r ? r->n : 0;
}

const char *spruce_layer_rules_key(const spruce_layer_rules *r, int i)
{
    return r && i >= 0 && i < r->n ? r->r[i].key : NULL;
}

const char *spruce_layer_rules_origin(const spruce_layer_rules *r)
{
    return r ? r->origin : NULL;
}

int spruce_layer_rules_match(const spruce_layer_rules *r, const char *name,
                             spruce_layer_target *t)
{
    int i;
    if (!r || !name)
        return -1;
    for (i = 0; i < r->n; i++)
        if (regexec(&r->r[i].re, name, 0, NULL, 0) == 0) {
            if (t)
                *t = r->r[i].t;
            return i;
        }
    return -1;
}
