/* cmd_demo.h: what the parts of `spruce demo` share: cmd_demo.c parses the
 * options and runs the stages, demo_report.c prints the report, demo_files.c
 * looks after the output directory. */
#ifndef SPRUCE_CLI_DEMO_H
#define SPRUCE_CLI_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_masks.h"
#include "spruce_pipeline.h"

#define DEMO_REPS 5 /* timed decoding runs of each decoder */

/* What one run of the demo does; quick is the small variant for tests. */
typedef struct {
    spruce_synth_config synth;
    int nsamples, seqlen;        /* calibration: nsamples windows of seqlen tokens */
    int nheld;                   /* held-out windows of seqlen tokens */
    int steps;                   /* decoded tokens per timed run */
} demo_plan;

/* The decoders compared: all on the same pruned weights. */
enum { DEC_DENSE, DEC_AUTO, DEC_NM, DEC_N };
extern const char *const demo_dec_name[DEC_N]; /* "dense", "auto", "2:4" */

/* The stages timed. */
enum { ST_SYNTH, ST_DENSE_PPL, ST_PRUNE, ST_PRUNED_PPL, ST_DECODE_PREP, ST_DECODE, ST_N };

/* What the pruning callbacks collect. */
typedef struct {
    double t0, last_block;
    int nlayers;
    double *loss;                /* (nlayers, SPRUCE_NPROJ) */
    int64_t *nz, *numel;         /* zeros and weights per block */
    spruce_maskfile *masks;
} prune_ctx;

/* Where one run writes, and what it has written so far. */
typedef struct {
    char dir[4096];
    char model[4200], pruned[4200], masks[4200], calib[4200], held[4200];
    int created_dir;             /* this run made dir */
    int wrote_model, wrote_tokens, wrote_pruned, wrote_masks;   /* what this run wrote */
} demo_paths;

/* Name the outputs under dir and make dir, refusing a non-empty one unless
 * force: 0, or the exit status (1, 2 for a bad name) after a message. */
int demo_prepare_dir(demo_paths *p, const char *dir, int force);

/* After a failure: remove what this run wrote (writers are atomic, so these
 * are whole outputs of the stages that finished; a failed stage left nothing). */
void demo_cleanup_failed(const demo_paths *p);

/* Everything one run makes and measures, stage by stage. */
typedef struct {
    demo_plan plan;
    demo_paths paths;
    int force, nthreads;
    long threads;
    int64_t nparams;
    double stage[ST_N];
    /* 1. the token files */
    uint32_t *calib, *held;
    size_t ncalib, nheld;
    /* 2., 4. perplexities; the log-probabilities of the first cmpwin windows */
    spruce_model *m, *mp;        /* the dense and the pruned model */
    double ppl_dense, ppl_pruned, kl, top1;
    int nwin_dense, nwin_pruned, cmpwin;
    float *lp_dense, *lp_pruned;
    /* 3. pruning */
    prune_ctx pctx;
    spruce_pipeline_summary sum;
    /* 5. decoding */
    double tps[DEC_N];
    int same[DEC_N], nsparse;
} demo_run;

/* 6. The report on stdout; total is the run's time so far. */
void demo_print_report(const demo_run *d, double total);

#endif
