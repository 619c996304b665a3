/* cli.h: what the subcommands of the spruce program share.
 * Only the command-line program prints to the terminal or exits. */
#ifndef SPRUCE_CLI_H
#define SPRUCE_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "spruce_clock.h"
#include "spruce_model.h"
#include "spruce_textdata.h"

/* Each subcommand: argv[0] is the subcommand's name; returns the exit status. */
int spruce_cmd_prune(int argc, char **argv);
int spruce_cmd_eval(int argc, char **argv);
int spruce_cmd_synth(int argc, char **argv);
int spruce_cmd_bench(int argc, char **argv);       /* dispatches "bench prune" too */
int spruce_cmd_bench_prune(int argc, char **argv);
int spruce_cmd_masks(int argc, char **argv);
int spruce_cmd_run(int argc, char **argv);
int spruce_cmd_demo(int argc, char **argv);
int spruce_cmd_tokenize(int argc, char **argv);

/* Print "spruce: <prefix>: <strerror(code)>: <detail>" to stderr. */
void cli_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Print "spruce: <message>" to stderr. */
void cli_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Strict number parsing: 0 on success, -1 (after printing which option was
 * wrong) if s is not a whole number / finite float in [lo, hi]. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
/* cmd's --groupsize G: a multiple of 32 from 32 to 256 (int4's groups); 0, or
 * -1 after a message. */
int cli_parse_groupsize(const char *cmd, const char *s, long *out);
int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* "N:M" with 0 < N < M. */
int cli_parse_pattern(const char *opt, const char *s, int *n, int *m);

/* --seqlen of a command on a model: 0 means min(2048, max_position_embeddings);
 * longer than max_position_embeddings is computed as transformers computes it,
 * with a warning (cli_length_warning).  0, or -1 after a message naming cmd
 * and dir. */
/* The library's warning for sequences of T tokens longer than the model's
 * max_position_embeddings, printed to stderr; nothing when T is within it. */
void cli_length_warning(const char *cmd, const spruce_config *cfg, long T, const char *dir);
int cli_model_seqlen(const char *cmd, const spruce_config *cfg, const char *dir,
                     long *seqlen);
/* The token ids of path into *ids (*n of them, caller frees): every one below
 * the vocabulary, at least one window of seqlen.  0, or -1 after a message. */
/* How path (given to option opt) is read: fmt_name when not NULL (ids, u16,
 * u32, text, jsonl), else detected; said on standard error.  Text and jsonl
 * load the tokenizer of model dir into *tok (an error when it has no
 * tokenizer.json); *tok is NULL otherwise.  0, or -1 after a message. */
int cli_data_open(const char *cmd, const char *opt, const char *path, const char *fmt_name,
                  const char *dir, spruce_data_format *f, spruce_tokenizer **tok);

int cli_load_windows(const char *cmd, const char *path, const spruce_config *cfg,
                     long seqlen, uint32_t **ids, size_t *n);

/* A JSON number for v, or JSON null when v is NaN or infinite (which JSON
 * cannot write): every JSON number the commands print goes through it. */
struct json_t;
struct json_t *cli_json_real(double v);

/* --threads T: OpenMP's and OpenBLAS's thread counts (T <= 0: leave them). */
void cli_set_threads(long threads);

/* SIGINT, SIGTERM and SIGHUP while writing (cli_signal.c): install() makes
 * them set a flag; cli_interrupted() is that signal (0 = none); the command
 * aborts at its next check point, removing its temporaries, and calls
 * reraise(cmd), which says so and ends the process by the same signal (it
 * returns only when no signal was caught). */
void cli_signals_install(void);
int cli_interrupted(void);
void cli_signals_reraise(const char *cmd);
/* Remove (and say so) what killed runs left beside the output path. */
void cli_clean_stale(const char *cmd, const char *path);
/* spruce_output_check() with the message printed: 0, or -1 after it. */
int cli_check_output(const char *cmd, const char *out, int is_dir, const char *out_what,
                     const char *in, const char *in_what);

/* Under mpirun: every rank passes whether it failed (after printing why with
 * cli_error or cli_fail); non-zero on every rank when any failed, and a rank
 * that did not fail prints the first failing rank's message.  One process:
 * returns failed. */
int cli_agree(int failed);
/* 1 on the rank that writes outputs and prints (rank 0; one process: always). */
int cli_rank0(void);

/* Non-zero when --verbose was given before the subcommand or SPRUCE_VERBOSE is set. */
extern int cli_verbose;

#endif
