/*
 * Thread workloads for nacre's app benchmark; each prints the mean cost of one
 * unit of work, timed inside the app (boot and exit do not count).
 *
 * Build: gcc -static -O2 bench_threads.c -o bench_threads
 * Usage: bench_threads pingpong N   two threads hand a token back and forth N
 *                                   times through futexes: ns per round trip
 *        bench_threads create N     create and join N threads one after another:
 *                                   ns per thread
 *        bench_threads cpu N        two threads each do N units of arithmetic:
 *                                   ns per unit, wall clock (so two CPUs halve it)
 * Prints: "ns_per_call <mean nanoseconds, 3 decimals>". Exit code 0, 1 if a
 * call fails, 2 for a usage error.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static atomic_int token;
static long rounds;

static void futex_wait(atomic_int *addr, int val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Waits until the token is `mine`, then passes it on as `next`. */
static void play(int mine, int next)
{
    for (long i = 0; i < rounds; i++) {
        int v;
        while ((v = atomic_load(&token)) != mine)
            futex_wait(&token, v);
        atomic_store(&token, next);
        futex_wake(&token);
    }
}

static void *partner(void *arg)
{
    (void)arg;
    play(1, 0);
    return NULL;
}

static void *nothing(void *arg) { return arg; }

static volatile uint64_t sink;

static void *crunch(void *arg)
{
    long n = (long)arg;
    uint64_t x = 88172645463325252ULL;
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    sink = x;
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    if (n <= 0) {
        fprintf(stderr, "usage: bench_threads pingpong|create|cpu N\n");
        return 2;
    }
    long long start = now_ns();
    if (strcmp(argv[1], "pingpong") == 0) {
        pthread_t t;
        rounds = n;
        if (pthread_create(&t, NULL, partner, NULL))
            return 1;
        play(0, 1);
        pthread_join(t, NULL);
    } else if (strcmp(argv[1], "create") == 0) {
        for (long i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, nothing, NULL) || pthread_join(t, NULL))
                return 1;
        }
    } else if (strcmp(argv[1], "cpu") == 0) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, crunch, (void *)n))
                return 1;
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
    } else {
        fprintf(stderr, "usage: bench_threads pingpong|create|cpu N\n");
        return 2;
    }
    printf("ns_per_call %.3f\n", (double)(now_ns() - start) / (double)n);
    return 0;
}
