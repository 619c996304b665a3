/* bench_svg.c: the chart of `spruce bench --sweep --svg FILE`: speedup over
 * dense (OpenBLAS float32, or with --dtype the dense kernel of that value
 * type) against sparsity, batch 1 and one larger batch, unstructured as lines
 * and 2:4 as markers, with the byte-ratio ceilings of the bitmask and 2:4
 * formats of that type. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_bench.h"
#include "spruce_qmatrix.h"

/* Bytes a weight of the value type streams (v) and its scales' share (sc);
 * the bitmask adds 1/8 a weight, 2:4 keeps half the values. */
typedef struct {
    double v, sc;
} wbytes;

static wbytes type_bytes(int dtype, int groupsize, int cols)
{
    wbytes b = {4.0, 0.0};
    if (dtype == SPRUCE_DT_BF16)
        b.v = 2.0;
    else if (dtype == SPRUCE_DT_INT8)
        b.v = 1.0, b.sc = 4.0 / cols;
    else if (dtype == SPRUCE_DT_INT4)
        b.v = 0.5, b.sc = 4.0 / (groupsize > 0 ? groupsize : 128);
    return b;
}

static double ceiling_bitmask(wbytes b, double s)
{
    return (b.v + b.sc) / (b.v * (1.0 - s) + 0.125 + b.sc);
}

/* A value type's sweep also has the rows of its dense kernel (the baseline,
 * 1 by definition): not drawn. */
static int is_dense_row(const bench_result *r) { return !strcmp(r->format, "dense"); }

static double ceiling_24(wbytes b) { return (b.v + b.sc) / (b.v / 2 + 0.125 + b.sc); }

int bench_svg_open(const char *path, bench_svg *svg)
{
    int fd;
    svg->path = path;
    svg->f = NULL;
    if (!(svg->tmp = malloc(strlen(path) + 32))) {
        cli_fail("bench: --svg %s: out of memory", path);
        return 1;
    }
    sprintf(svg->tmp, "%s.tmp-%ld", path, (long)getpid());
    fd = open(svg->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 || !(svg->f = fdopen(fd, "w"))) {
        cli_fail("bench: --svg %s: cannot create %s: %s", path, svg->tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(svg->tmp);
        }
        free(svg->tmp);
        svg->tmp = NULL;
        return 1;
    }
    return 0;
}

void bench_svg_discard(bench_svg *svg)
{
    if (svg->f)
        fclose(svg->f);
    if (svg->tmp)
        unlink(svg->tmp);
    free(svg->tmp);
    svg->f = NULL;
    svg->tmp = NULL;
}

int bench_write_svg(bench_svg *svg, const bench_ctx *cx, int rows, int cols, int big, int dtype,
                    int groupsize)
{
    const wbytes wb = type_bytes(dtype, groupsize, cols);
    const char *tname = dtype == SPRUCE_DT_F32 ? "float32" : spruce_dtype_name(dtype);
    char base[64];
    const double W = 780, H = 480, L = 70, R = 210, T = 50, B = 60;
    const double pw = W - L - R, ph = H - T - B, x0 = 0.25, x1 = 1.0;
    double ymax = 1.0;
    int i, k, b;
    FILE *f = svg->f;
    const char *path = svg->path;
    const char *colors[2] = {"#1f77b4", "#d62728"};
    const int bs[2] = {1, big};
    for (i = 0; i < cx->nres; i++)
        if (cx->res[i].speedup > ymax)
            ymax = cx->res[i].speedup;
    if (ceiling_bitmask(wb, 0.95) > ymax)
        ymax = ceiling_bitmask(wb, 0.95);
    if (dtype == SPRUCE_DT_F32)
        snprintf(base, sizeof base, "dense OpenBLAS");
    else if (dtype == SPRUCE_DT_INT4)
        snprintf(base, sizeof base, "dense int4 (groups of %d)", groupsize > 0 ? groupsize : 128);
    else
        snprintf(base, sizeof base, "dense %s", tname);
    ymax = ceil(ymax + 0.5);
#define PX(s) (L + ((s) - x0) / (x1 - x0) * pw)
#define PY(v) (T + ph - (v) / ymax * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"20\" font-size=\"15\">spruce sparse kernels against %s: "
               "%dx%d, %s values, %d threads, %s</text>\n",
            L, base, rows, cols, tname, cx->threads, cx->isa);
    fprintf(f, "<text x=\"%.0f\" y=\"38\" font-size=\"11\" fill=\"#555\">median of %d passes "
               "over > %.1f MB of distinct matrices each; load average %.2f at the start</text>\n",
            L, cx->reps, cx->rotate / 1e6, cx->load);
    /* grid and axes */
    {
        /* at most about 12 labelled ticks: a step of 1, 2, 5, 10, 20, 50 ... */
        int step = 1, mult = 1;
        while (ymax / step > 12) {
            step = (step / mult == 1 ? 2 : step / mult == 2 ? 5 : 10) * mult;
            if (step / mult == 10)
                mult *= 10;
        }
        for (k = 0; k <= (int)ymax; k += step) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                       "stroke=\"#e5e5e5\"/>\n", L, PY(k), L + pw, PY(k));
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", L - 6,
                    PY(k) + 4, k);
        }
    }
    for (k = 30; k <= 95; k += 10) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                PX(k / 100.0), T, PX(k / 100.0), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d%%</text>\n",
                PX(k / 100.0), T + ph + 18, k);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"black\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">sparsity (fraction of weights "
               "that are zero)</text>\n", L + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(20,%.1f) rotate(-90)\" text-anchor=\"middle\">speedup "
               "over dense (x)</text>\n", T + ph / 2);
    /* dense line and the byte-ratio ceiling of the bitmask format */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
               "stroke-dasharray=\"6,4\"/>\n", L, PY(1.0), L + pw, PY(1.0));
    fprintf(f, "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-dasharray=\"2,3\" "
               "stroke-width=\"2\" points=\"");
    for (k = 30; k <= 95; k++)
        fprintf(f, "%.1f,%.1f ", PX(k / 100.0), PY(ceiling_bitmask(wb, k / 100.0)));
    fprintf(f, "\"/>\n");
    /* measured lines, unstructured; 2:4 as separate markers */
    for (b = 0; b < 2; b++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[b]);
        for (i = 0; i < cx->nres; i++)
            if (cx->res[i].batch == bs[b] && !cx->res[i].n && !is_dense_row(&cx->res[i]))
                fprintf(f, "%.1f,%.1f ", PX(cx->res[i].sparsity), PY(cx->res[i].speedup));
        fprintf(f, "\"/>\n");
        for (i = 0; i < cx->nres; i++) {
            const bench_result *r = &cx->res[i];
            if (r->batch != bs[b] || is_dense_row(r))
                continue;
            if (!r->n)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s "
                           "%.0f%% batch %d: %.2fx</title></circle>\n",
                        PX(r->sparsity), PY(r->speedup), colors[b], r->format,
                        100 * r->sparsity, r->batch, r->speedup);
            else
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"%s\" "
                           "transform=\"rotate(45 %.1f %.1f)\"><title>%s %d:%d batch %d: "
                           "%.2fx</title></rect>\n",
                        PX(r->sparsity) - 4.5, PY(r->speedup) - 4.5, colors[b], PX(r->sparsity),
                        PY(r->speedup), r->format, r->n, r->m, r->batch, r->speedup);
        }
    }
    /* 2:4 ceiling */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" "
               "stroke-width=\"2\"/>\n", PX(0.5) - 8, PY(ceiling_24(wb)), PX(0.5) + 8, PY(ceiling_24(wb)));
    /* legend */
    {
        double lx = L + pw + 15, ly = T + 10;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">batch 1, unstructured</text>\n",
                lx, ly, lx + 25, ly, colors[0], lx + 30, ly + 4);
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">batch %d, "
                   "unstructured</text>\n",
                lx, ly, lx + 25, ly, colors[1], lx + 30, ly + 4, big);
        ly += 20;
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"8\" height=\"8\" fill=\"#555\" "
                   "transform=\"rotate(45 %.0f %.0f)\"/><text x=\"%.0f\" y=\"%.0f\">2:4 (same "
                   "colours)</text>\n", lx + 8, ly - 4, lx + 12, ly, lx + 30, ly + 4);
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\" "
                   "stroke-dasharray=\"6,4\"/><text x=\"%.0f\" y=\"%.0f\">%s = "
                   "1</text>\n",
                lx, ly, lx + 25, ly, lx + 30, ly + 4, dtype == SPRUCE_DT_F32 ? base : "dense");
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
                   "stroke-dasharray=\"2,3\" stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">byte "
                   "ceiling (bitmask,</text><text x=\"%.0f\" y=\"%.0f\">batch 1)</text>\n",
                lx, ly, lx + 25, ly, lx + 30, ly + 4, lx + 30, ly + 18);
        ly += 14;
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">byte ceiling (2:4)</text>\n",
                lx + 8, ly, lx + 18, ly, lx + 30, ly + 4);
        ly += 30;
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">format: auto (fastest of</text>\n"
                   "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">%s)</text>\n",
                lx, ly, lx, ly + 13,
                dtype == SPRUCE_DT_F32 ? "dense, csr, bitmask, nm" : "dense, bitmask, nm");
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    svg->f = NULL;
    if (ferror(f) | fclose(f)) {
        cli_fail("bench: writing %s: %s", svg->tmp, strerror(errno));
        return 1; /* bench_svg_discard removes the temporary */
    }
    if (rename(svg->tmp, path) != 0) {
        cli_fail("bench: cannot rename %s to %s: %s", svg->tmp, path, strerror(errno));
        return 1;
    }
    free(svg->tmp);
    svg->tmp = NULL;
    return 0;
}
