/* prune_report.h: what `spruce prune` says about each layer: the rows of its
 * summary (text, or one JSON object with --json) and the per-layer plan's
 * attributes in the masks file. */
#ifndef SPRUCE_CLI_PRUNE_REPORT_H
#define SPRUCE_CLI_PRUNE_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "spruce_masks.h"
#include "spruce_pipeline.h"

typedef struct {
    char name[256];
    int rows, cols;
    spruce_layer_target target;
    char pattern[32];        /* "unstructured", "N:M" or "dense" */
    double sparsity;         /* fraction of the weights that are zero */
    int64_t pruned;          /* weights the mask prunes */
    double loss;
    int has_loss;
    double seconds;
    /* a mixture of experts' expert (-1: any other layer): its calibration
     * tokens, relative error (-1: none) and the few-token rule (or "") */
    int expert;
    int64_t tokens;
    double rel_error;
    char fallback[48];
} prune_row;

typedef struct {
    prune_row *rows;
    int n, cap;
    const char *profile;     /* "uniform", "owl" or "layer-sparsity" */
    double *block_sparsity;  /* owl: nlayers values */
    int nlayers;
} prune_report;

/* The pattern a layer got: its target's, or the run's default_pattern. */
const char *prune_report_pattern(const spruce_layer_target *t, const char *default_pattern,
                                 char *buf, size_t size);
/* Append the row of a layer report; -1 when out of memory. */
int prune_report_add(prune_report *pr, const spruce_layer_report *r, const char *pattern,
                     int has_loss);
/* Keep the plan's block sparsities (owl); -1 when out of memory. */
int prune_report_plan(prune_report *pr, const double *block_sparsity, int nlayers);
/* A line per layer (only when the run had a plan) to f. */
void prune_report_text(const prune_report *pr, FILE *f);
/* The summary as one JSON object on f: the run (fields of head, a JSON
 * object it takes), "layers" and "total"; -1 when it could not be written. */
int prune_report_json(const prune_report *pr, struct json_t *head,
                      const spruce_pipeline_summary *sum, FILE *f);
/* The masks file's root attributes of the plan: "sparsity_profile", with owl
 * "owl_m", "owl_lambda" and "block_sparsity" (comma-separated), with a file
 * "layer_sparsity" (its path). */
int prune_report_mask_attrs(const prune_report *pr, spruce_maskfile *mf, double owl_m,
                            double owl_lambda, const char *layer_file);
void prune_report_free(prune_report *pr);

#endif
