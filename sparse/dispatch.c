/* dispatch.c: choose the kernels' instruction set once.
 *
 * An instruction set is used when it was built (config.h), the CPU has it
 * (cpuid) and the OS saves its registers on context switches (xgetbv: XCR0 has
 * the SSE and AVX state bits for AVX2, plus the opmask and both zmm halves for
 * AVX-512).  SPRUCE_ISA=scalar|avx2|avx512 forces one; an unknown or
 * unavailable name is an error reported by every call that runs a kernel.
 * Extensions that a few kernels use beyond their instruction set (AVX512-BF16,
 * cpuid leaf 7 subleaf 1) are detected here too. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "sparse_internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int supported[SPRUCE_ISA_COUNT];
static spruce__kernel_table tables[SPRUCE_ISA_COUNT];
static int chosen;
static int has_bf16dp; /* AVX512-BF16 (vdpbf16ps), with AVX-512 usable */
static int chosen_err;
static char chosen_msg[200];

static const char *const isa_names[SPRUCE_ISA_COUNT] = {"scalar", "avx2", "avx512"};

#if defined(__x86_64__) || defined(__i386__)
static unsigned long long xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

static void detect(void)
{
    supported[SPRUCE_ISA_SCALAR] = 1;
#if defined(__x86_64__) || defined(__i386__)
    {
        unsigned a, b, c, d, b7 = 0, c7, d7, a7;
        unsigned long long xcr0 = 0;
        int osxsave, avx, fma, f16c, avx2, bmi2, f, dq, bw, vl;
        if (!__get_cpuid(1, &a, &b, &c, &d))
            return;
        osxsave = (c >> 27) & 1;
        avx = (c >> 28) & 1;
        fma = (c >> 12) & 1;
        f16c = (c >> 29) & 1;
        if (__get_cpuid_max(0, NULL) >= 7)
            __cpuid_count(7, 0, a7, b7, c7, d7);
        (void)a7;
        (void)c7;
        (void)d7;
        avx2 = (b7 >> 5) & 1;
        bmi2 = (b7 >> 8) & 1;
        f = (b7 >> 16) & 1;
        dq = (b7 >> 17) & 1;
        bw = (b7 >> 30) & 1;
        vl = (b7 >> 31) & 1;
        if (osxsave)
            xcr0 = xgetbv0();
#ifdef SPRUCE_HAVE_AVX2
        if (avx && avx2 && fma && f16c && bmi2 && (xcr0 & 0x6) == 0x6)
            supported[SPRUCE_ISA_AVX2] = 1;
#endif
#ifdef SPRUCE_HAVE_AVX512
        if (supported[SPRUCE_ISA_AVX2] && f && dq && bw && vl && (xcr0 & 0xe6) == 0xe6)
            supported[SPRUCE_ISA_AVX512] = 1;
        if (supported[SPRUCE_ISA_AVX512] && __get_cpuid_max(0, NULL) >= 7) {
            unsigned a71, b71, c71, d71;
            __cpuid_count(7, 1, a71, b71, c71, d71);
            (void)b71; (void)c71; (void)d71;
            has_bf16dp = (a71 >> 5) & 1;
        }
#endif
        (void)avx; (void)avx2; (void)fma; (void)f16c; (void)bmi2;
        (void)f; (void)dq; (void)bw; (void)vl; (void)xcr0;
    }
#endif
}

static void init(void)
{
    const char *env = getenv("SPRUCE_ISA");
    int i;
    detect();
    spruce__kernels_scalar(&tables[SPRUCE_ISA_SCALAR]);
#ifdef SPRUCE_HAVE_AVX2
    tables[SPRUCE_ISA_AVX2] = tables[SPRUCE_ISA_SCALAR];
    if (supported[SPRUCE_ISA_AVX2])
        spruce__kernels_avx2(&tables[SPRUCE_ISA_AVX2]);
#endif
#ifdef SPRUCE_HAVE_AVX512
    tables[SPRUCE_ISA_AVX512] = tables[SPRUCE_ISA_SCALAR];
    if (supported[SPRUCE_ISA_AVX512])
        spruce__kernels_avx512(&tables[SPRUCE_ISA_AVX512]);
#endif
    for (i = 0; i < SPRUCE_ISA_COUNT; i++)
        if (supported[i])
            chosen = i;
    if (env && *env) {
        char avail[64] = "";
        int want = -1;
        for (i = 0; i < SPRUCE_ISA_COUNT; i++) {
            if (!strcmp(env, isa_names[i]))
                want = i;
            if (supported[i]) {
                strcat(avail, " ");
                strcat(avail, isa_names[i]);
            }
        }
        if (want < 0 || !supported[want]) {
            chosen_err = SPRUCE_EUNSUPPORTED;
            snprintf(chosen_msg, sizeof chosen_msg,
                     "SPRUCE_ISA=%s: %s (available here:%s)", env,
                     want < 0 ? "unknown instruction set, expected scalar, avx2 or avx512"
                              : "not supported by this build, CPU or OS",
                     avail);
        } else {
            chosen = want;
        }
    }
}

int spruce_sparse_isa(void)
{
    pthread_once(&once, init);
    if (chosen_err)
        return spruce__seterr(chosen_err, "%s", chosen_msg);
    return chosen;
}

const char *spruce_sparse_isa_name(int isa)
{
    return isa >= 0 && isa < SPRUCE_ISA_COUNT ? isa_names[isa] : "?";
}

int spruce_sparse_isa_supported(int isa)
{
    pthread_once(&once, init);
    return isa >= 0 && isa < SPRUCE_ISA_COUNT && supported[isa];
}

int spruce_sparse_isa_set(int isa)
{
    pthread_once(&once, init);
    if (isa < 0 || isa >= SPRUCE_ISA_COUNT || !supported[isa])
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "instruction set %s is not supported by this "
                              "build, CPU or OS", spruce_sparse_isa_name(isa));
    chosen = isa;
    chosen_err = 0;
    return 0;
}

int spruce__cpu_has_bf16dp(void)
{
    pthread_once(&once, init);
    return has_bf16dp;
}

const spruce__kernel_table *spruce__kernels(void)
{
    int isa = spruce_sparse_isa();
    return isa < 0 ? NULL : &tables[isa];
}

const spruce__kernel_table *spruce__kernels_isa(int isa)
{
    return spruce_sparse_isa_supported(isa) ? &tables[isa] : NULL;
}

void spruce__kernels_scalar(spruce__kernel_table *t)
{
    t->k[SPRUCE_FMT_DENSE][0] = NULL;
    t->k[SPRUCE_FMT_DENSE][1] = NULL;
    t->k[SPRUCE_FMT_CSR][0] = csr_spmv_scalar;
    t->k[SPRUCE_FMT_CSR][1] = csr_spmm_scalar;
    t->k[SPRUCE_FMT_BITMASK][0] = bitmask_spmv_scalar;
    t->k[SPRUCE_FMT_BITMASK][1] = bitmask_spmm_scalar;
    t->k[SPRUCE_FMT_NM][0] = bitmask_spmv_scalar;
    t->k[SPRUCE_FMT_NM][1] = bitmask_spmm_scalar;
}
