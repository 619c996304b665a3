/* cli_env.h: environment the spruce program needs before its libraries load. */
#ifndef SPRUCE_CLI_ENV_H
#define SPRUCE_CLI_ENV_H

/* Run the same command line again with OPENBLAS_CORETYPE set when OpenBLAS
 * fell back to its SSE3 kernels on a CPU with AVX2/AVX-512, and with
 * OMP_WAIT_POLICY=passive, when these are unset (SPRUCE_NO_REEXEC=1 turns this
 * off).  Returns only when nothing needed changing or exec failed. */
void cli_tune_environment(void);

/* Bind the main thread, the OpenMP workers and OpenBLAS's workers one per CPU
 * of the process's affinity set (Linux), unless the user placed threads
 * (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY) or set SPRUCE_NO_BIND. */
void cli_bind_threads(void);

#endif
