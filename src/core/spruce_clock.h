/* spruce_clock.h: the one clock every part of spruce times itself with. */
#ifndef SPRUCE_CLOCK_H
#define SPRUCE_CLOCK_H

#ifdef __cplusplus
extern "C" {
#endif

/* Seconds of a monotonic clock (CLOCK_MONOTONIC): only differences mean
 * anything. */
double spruce_clock_now(void);

/* The median of the n values of v (the mean of the two middle ones for an
 * even n), sorting v in place; 0 for n <= 0 or v NULL. */
double spruce_clock_median(double *v, int n);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_CLOCK_H */
