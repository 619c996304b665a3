/* prune_report.c: the per-layer rows of `spruce prune`'s summary and the
 * plan's attributes in the masks file (prune_report.h). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "prune_report.h"

const char *prune_report_pattern(const spruce_layer_target *t, const char *default_pattern,
                                 char *buf, size_t size)
{
    if (t->kind == SPRUCE_TARGET_DENSE)
        snprintf(buf, size, "dense");
    else if (t->kind == SPRUCE_TARGET_NM)
        snprintf(buf, size, "%d:%d", t->n, t->m);
    else if (t->kind == SPRUCE_TARGET_SPARSITY)
        snprintf(buf, size, "unstructured");
    else
        snprintf(buf, size, "%s", default_pattern);
    return buf;
}

int prune_report_add(prune_report *pr, const spruce_layer_report *r, const char *pattern,
                     int has_loss)
{
    prune_row *row;
    if (pr->n == pr->cap) {
        int cap = pr->cap ? 2 * pr->cap : 64;
        prune_row *p = realloc(pr->rows, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        pr->rows = p;
        pr->cap = cap;
    }
    row = &pr->rows[pr->n++];
    memset(row, 0, sizeof *row);
    snprintf(row->name, sizeof row->name, "%s", r->name);
    row->rows = r->rows;
    row->cols = r->cols;
    row->target = r->target;
    snprintf(row->pattern, sizeof row->pattern, "%s", pattern);
    row->sparsity = r->result.sparsity;
    row->pruned = r->pruned;
    row->loss = r->result.loss;
    row->has_loss = has_loss && r->target.kind != SPRUCE_TARGET_DENSE;
    row->seconds = r->result.seconds;
    row->expert = r->expert;
    row->tokens = r->tokens;
    row->rel_error = r->rel_error;
    snprintf(row->fallback, sizeof row->fallback, "%s", r->fallback ? r->fallback : "");
    return 0;
}

int prune_report_plan(prune_report *pr, const double *block_sparsity, int nlayers)
{
    pr->nlayers = nlayers;
    if (!block_sparsity)
        return 0;
    if (!(pr->block_sparsity = malloc((size_t)nlayers * sizeof *pr->block_sparsity)))
        return -1;
    memcpy(pr->block_sparsity, block_sparsity, (size_t)nlayers * sizeof *block_sparsity);
    return 0;
}

void prune_report_text(const prune_report *pr, FILE *f)
{
    int i;
    char t[32];
    if (!strcmp(pr->profile, "uniform"))
        return;
    if (pr->block_sparsity)
        for (i = 0; i < pr->nlayers; i++)
            fprintf(f, "block %d: owl sparsity %.6f\n", i, pr->block_sparsity[i]);
    for (i = 0; i < pr->n; i++) {
        const prune_row *r = &pr->rows[i];
        fprintf(f, "  %-48s %-8s %-12s pruned %9lld of %9lld  sparsity %.4f", r->name,
                spruce_layer_target_str(&r->target, t, sizeof t), r->pattern,
                (long long)r->pruned, (long long)r->rows * r->cols, r->sparsity);
        if (r->has_loss)
            fprintf(f, "  loss %.4e", r->loss);
        fputc('\n', f);
    }
}

int prune_report_json(const prune_report *pr, json_t *head, const spruce_pipeline_summary *sum,
                      FILE *f)
{
    json_t *layers = json_array(), *total = json_object(), *bs = NULL;
    int i, rc;
    char t[32];
    if (!head || !layers || !total) {
        json_decref(head);
        json_decref(layers);
        json_decref(total);
        return -1;
    }
    json_object_set_new(head, "sparsity_profile", json_string(pr->profile));
    if (pr->block_sparsity) {
        bs = json_array();
        for (i = 0; i < pr->nlayers; i++)
            json_array_append_new(bs, cli_json_real(pr->block_sparsity[i]));
        json_object_set_new(head, "block_sparsity", bs);
    }
    for (i = 0; i < pr->n; i++) {
        const prune_row *r = &pr->rows[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(r->name));
        json_object_set_new(o, "shape", json_pack("[i, i]", r->rows, r->cols));
        json_object_set_new(o, "target", json_string(spruce_layer_target_str(&r->target, t,
                                                                             sizeof t)));
        json_object_set_new(o, "pattern", json_string(r->pattern));
        json_object_set_new(o, "params", json_integer((json_int_t)r->rows * r->cols));
        json_object_set_new(o, "pruned", json_integer((json_int_t)r->pruned));
        json_object_set_new(o, "sparsity", cli_json_real(r->sparsity));
        json_object_set_new(o, "loss", r->has_loss ? cli_json_real(r->loss) : json_null());
        json_object_set_new(o, "seconds", cli_json_real(r->seconds));
        if (r->expert >= 0) {   /* a mixture of experts' expert */
            json_object_set_new(o, "expert", json_integer(r->expert));
            json_object_set_new(o, "tokens", json_integer((json_int_t)r->tokens));
            json_object_set_new(o, "rel_error",
                                r->rel_error >= 0 ? cli_json_real(r->rel_error) : json_null());
            json_object_set_new(o, "fallback",
                                *r->fallback ? json_string(r->fallback) : json_null());
        }
        json_array_append_new(layers, o);
    }
    json_object_set_new(head, "layers", layers);
    json_object_set_new(total, "layers_pruned", json_integer(sum->layers_pruned));
    json_object_set_new(total, "layers_dense", json_integer(sum->layers_dense));
    json_object_set_new(total, "params", json_integer((json_int_t)sum->params));
    json_object_set_new(total, "pruned", json_integer((json_int_t)sum->pruned));
    json_object_set_new(total, "zeros", json_integer((json_int_t)sum->zeros));
    json_object_set_new(total, "sparsity", cli_json_real(sum->sparsity));
    json_object_set_new(total, "loss", cli_json_real(sum->loss));
    json_object_set_new(total, "seconds", cli_json_real(sum->seconds));
    json_object_set_new(head, "total", total);
    rc = json_dumpf(head, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', f);
    json_decref(head);
    return rc < 0 ? -1 : 0;
}

int prune_report_mask_attrs(const prune_report *pr, spruce_maskfile *mf, double owl_m,
                            double owl_lambda, const char *layer_file)
{
    int rc, i;
    if ((rc = spruce_maskfile_set_attr_string(mf, "sparsity_profile", pr->profile)))
        return rc;
    if (layer_file && (rc = spruce_maskfile_set_attr_string(mf, "layer_sparsity", layer_file)))
        return rc;
    if (pr->block_sparsity) {
        size_t cap = (size_t)pr->nlayers * 24 + 1, len = 0;
        char *s = malloc(cap);
        if (!s)
            return spruce__seterr(SPRUCE_ENOMEM, "block sparsities of %d blocks", pr->nlayers);
        s[0] = '\0';
        for (i = 0; i < pr->nlayers; i++)
            len += (size_t)snprintf(s + len, cap - len, "%s%.6f", i ? "," : "",
                                    pr->block_sparsity[i]);
        if (!(rc = spruce_maskfile_set_attr_double(mf, "owl_m", owl_m)) &&
            !(rc = spruce_maskfile_set_attr_double(mf, "owl_lambda", owl_lambda)))
            rc = spruce_maskfile_set_attr_string(mf, "block_sparsity", s);
        free(s);
    }
    return rc;
}

void prune_report_free(prune_report *pr)
{
    free(pr->rows);
    free(pr->block_sparsity);
    pr->rows = NULL;
    pr->block_sparsity = NULL;
}
