/*
 * A page unmapped or made inaccessible by one thread is gone for every thread at
 * once: a second thread that keeps reading it (on another CPU, with the
 * translation cached) takes SIGSEGV from the next read on, and never sees the
 * frame's next use. Run natively and under nacre with several vCPUs, it must print
 * the same.
 *
 * Build: gcc -static -O2 -pthread unmap_threads.c -o unmap_threads (or musl-gcc)
 * Prints "ok NAME" or "FAIL NAME: DETAIL" per check; exits 0 when all passed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long *target;
static atomic_long reads;
static atomic_int faulted, stop;
static atomic_ulong seen_other;
static __thread sigjmp_buf reader_env;

static void on_segv(int sig)
{
    (void)sig;
    atomic_store(&faulted, 1);
    siglongjmp(reader_env, 1);
}

static void *reader(void *arg)
{
    (void)arg;
    if (sigsetjmp(reader_env, 1))
        return NULL;
    while (!atomic_load(&stop)) {
        unsigned long v = *target;
        if (v != 0x5A5A5A5AUL)
            atomic_store(&seen_other, v);
        atomic_fetch_add(&reads, 1);
    }
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Remove the page under a running reader with `remove`, then reuse memory. */
static const char *check(int use_mprotect)
{
    static char detail[128];
    unsigned long *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return "mmap";
    *page = 0x5A5A5A5AUL;
    target = page;
    atomic_store(&reads, 0);
    atomic_store(&faulted, 0);
    atomic_store(&stop, 0);
    atomic_store(&seen_other, 0);
    /* Memory for after the removal, mapped now (so that it cannot take the removed
     * page's address) and first touched then (so that it may take its frame). */
    unsigned long *fresh = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fresh == MAP_FAILED)
        return "mmap of the fresh pages";
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    /* Wait until the reader has read the page many times. */
    double start = now();
    while (atomic_load(&reads) < 100000 && now() - start < 10)
        sched_yield();
    if (use_mprotect)
        mprotect(page, 4096, PROT_NONE);
    else
        munmap(page, 4096);
    for (int i = 0; i < 64; i++)
        fresh[i * 512] = 0xBADBADUL;
    start = now();
    while (!atomic_load(&faulted) && now() - start < 5)
        usleep(1000);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    if (use_mprotect)
        munmap(page, 4096);
    munmap(fresh, 64 * 4096);
    if (!atomic_load(&faulted))
        return "the reader went on reading the removed page";
    if (atomic_load(&seen_other)) {
        snprintf(detail, sizeof detail, "the reader saw %#lx through the removed page",
                 (unsigned long)atomic_load(&seen_other));
        return detail;
    }
    return NULL;
}

static int failures;

static void report(const char *name, const char *fail)
{
    if (fail) {
        printf("FAIL %s: %s\n", name, fail);
        failures++;
    } else {
        printf("ok %s\n", name);
    }
    fflush(stdout);
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    report("munmap_under_a_reader", check(0));
    report("mprotect_under_a_reader", check(1));
    return failures != 0;
}
