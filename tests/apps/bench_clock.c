/*
 * Clock-read workload for nacre's app benchmark: times CALLS calls of
 * clock_gettime(CLOCK_MONOTONIC), through the libc (which reads the clock in
 * the vDSO, without a syscall) or as the raw syscall, and prints the mean cost
 * of one call.
 *
 * Build: gcc -static -O2 bench_clock.c -o bench_clock
 * Usage: bench_clock vdso|syscall CALLS
 * Prints: "ns_per_call <mean nanoseconds, 3 decimals>". Exit code 0, 1 if a
 * call fails or the clock went backwards, 2 for a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

int main(int argc, char **argv)
{
    long calls = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    int raw = argc == 3 && strcmp(argv[1], "syscall") == 0;
    if (calls <= 0 || (!raw && strcmp(argv[1], "vdso") != 0)) {
        fprintf(stderr, "usage: bench_clock vdso|syscall CALLS\n");
        return 2;
    }
    struct timespec start, t, end;
    long long last = 0;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < calls; i++) {
        long r = raw ? syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &t)
                     : clock_gettime(CLOCK_MONOTONIC, &t);
        if (r != 0 || ns_of(&t) < last) {
            fprintf(stderr, "bench_clock: call %ld failed or went backwards\n", i);
            return 1;
        }
        last = ns_of(&t);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("ns_per_call %.3f\n", (double)(ns_of(&end) - ns_of(&start)) / (double)calls);
    return 0;
}
