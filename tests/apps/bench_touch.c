/*
 * Memory workload for nacre's app benchmark: allocates 1 GiB with malloc,
 * writes one byte in every 4 KiB page (so each page is faulted in, and in a
 * confidential guest accepted, once), then reads those bytes back into a sum.
 *
 * Build: gcc -static -O2 bench_touch.c -o bench_touch
 * Prints: "sum N\n", where N is the sum over pages p = 0..262143 of p % 251
 * (32760450 for 1 GiB). Exit code 0, or 1 if the allocation fails.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TOTAL_BYTES ((size_t)1 << 30)
#define PAGE_BYTES 4096

int main(void)
{
    /* volatile: every store and load must reach memory, so the compiler can
     * neither drop the buffer nor compute the sum without touching it. */
    volatile unsigned char *buffer = malloc(TOTAL_BYTES);
    if (buffer == NULL) {
        fprintf(stderr, "bench_touch: cannot allocate 1 GiB\n");
        return 1;
    }

    size_t pages = TOTAL_BYTES / PAGE_BYTES;
    for (size_t p = 0; p < pages; p++)
        buffer[p * PAGE_BYTES] = (unsigned char)(p % 251);

    uint64_t sum = 0;
    for (size_t p = 0; p < pages; p++)
        sum += buffer[p * PAGE_BYTES];

    printf("sum %llu\n", (unsigned long long)sum);
    return 0;
}
