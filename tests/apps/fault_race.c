/*
 * Two threads fault on the same fresh page at the same moment: whichever takes the
 * fault second finds the page there already, and nothing either thread wrote is
 * lost. Rounds of: a fresh anonymous area, both threads released together, each
 * writing its own word of every page (small areas, mapped 4 KiB at a time) or of one
 * page of each 2 MiB region (areas the kernel may map with 2 MiB pages), then both
 * checking every word. Run natively and under nacre with several vCPUs, it must print
 * the same.
 *
 * Build: gcc -static -O2 -pthread fault_race.c -o fault_race (or musl-gcc)
 * Prints "ok NAME" or "FAIL NAME: DETAIL" per check; exits 0 when all passed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define ROUNDS 40
#define SMALL_PAGES 16
#define HUGE_REGIONS 4

static unsigned char *area;
static size_t area_len, stride;
/* Rounds released (by the main thread) and finished (by the second thread): both
 * threads spin rather than sleep, so that they start writing at the same moment. */
static atomic_int released, finished, stop;

static void wait_for(atomic_int *counter, int value)
{
    while (atomic_load(counter) < value)
        sched_yield();
}

/* Thread `id` writes its word (offset id * 8) of every `stride`-th page. */
static void write_words(int id, int round)
{
    for (size_t off = 0; off < area_len; off += stride) {
        volatile uint64_t *w = (volatile uint64_t *)(area + off) + id;
        *w = ((uint64_t)round << 32) | ((uint64_t)id << 16) | (off / stride);
    }
}

static void *second(void *arg)
{
    (void)arg;
    for (int n = 1;; n++) {
        wait_for(&released, n);
        if (atomic_load(&stop))
            return NULL;
        write_words(1, n);
        atomic_store(&finished, n);
    }
}

/* Map a fresh area for this round: `huge` areas start at a 2 MiB boundary. */
static int map_area(int huge)
{
    if (huge) {
        size_t len = HUGE * (HUGE_REGIONS + 1);
        unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED)
            return -1;
        uintptr_t aligned = ((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1);
        area = (unsigned char *)aligned;
        area_len = HUGE * HUGE_REGIONS;
        stride = HUGE;
        /* Keep only the aligned regions, so each is wholly inside the area. */
        if (aligned > (uintptr_t)raw)
            munmap(raw, aligned - (uintptr_t)raw);
        size_t tail = (uintptr_t)raw + len - (aligned + area_len);
        if (tail)
            munmap(area + area_len, tail);
        return 0;
    }
    area_len = SMALL_PAGES * PAGE;
    stride = PAGE;
    area = mmap(NULL, area_len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return area == MAP_FAILED ? -1 : 0;
}

static int rounds;

static void check(const char *name, int huge)
{
    long lost = 0;
    char detail[160] = "";
    for (int i = 0; i < ROUNDS; i++) {
        int round = ++rounds;
        if (map_area(huge)) {
            printf("FAIL %s: mmap failed\n", name);
            return;
        }
        atomic_store(&released, round);
        write_words(0, round);
        wait_for(&finished, round);
        for (size_t off = 0; off < area_len; off += stride) {
            for (int id = 0; id < 2; id++) {
                uint64_t want = ((uint64_t)round << 32) | ((uint64_t)id << 16) | (off / stride);
                uint64_t got = ((uint64_t *)(area + off))[id];
                if (got != want) {
                    if (!lost)
                        snprintf(detail, sizeof detail,
                                 "round %d, page %zu, thread %d: %#llx, not %#llx",
                                 round, off / stride, id, (unsigned long long)got,
                                 (unsigned long long)want);
                    lost++;
                }
            }
        }
        munmap(area, area_len);
    }
    if (lost)
        printf("FAIL %s: %ld words lost (first: %s)\n", name, lost, detail);
    else
        printf("ok %s\n", name);
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL)) {
        printf("FAIL pthread_create\n");
        return 1;
    }
    check("same_4k_page_faulted_by_two_threads", 0);
    check("same_2m_region_faulted_by_two_threads", 1);
    atomic_store(&stop, 1);
    atomic_store(&released, rounds + 1);
    pthread_join(t, NULL);
    fflush(stdout);
    return 0;
}
