/*
 * Output-throughput workload for nacre's app benchmark: writes 256 MiB to
 * stdout with write(2), 1 MiB per call from one buffer filled up front, and
 * resumes short writes. The benchmark runs it with stdout on /dev/null, so
 * what is measured is the cost of the write path itself.
 *
 * Build: gcc -static -O2 bench_write.c -o bench_write
 * Prints: 256 MiB of the byte pattern 0, 1, ..., 250, 0, 1, ... (restarting
 * every 1 MiB) on stdout. Exit code 0, or 1 with a message on stderr if a
 * write fails.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_BYTES (1 << 20)
#define TOTAL_BYTES (256u << 20)

static unsigned char chunk[CHUNK_BYTES];

int main(void)
{
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (unsigned char)(i % 251);

    for (size_t done = 0; done < TOTAL_BYTES; done += CHUNK_BYTES) {
        const unsigned char *p = chunk;
        size_t left = CHUNK_BYTES;
        while (left > 0) {
            ssize_t n = write(STDOUT_FILENO, p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                fprintf(stderr, "bench_write: write: %s\n",
                        n < 0 ? strerror(errno) : "wrote nothing");
                return 1;
            }
            p += n;
            left -= (size_t)n;
        }
    }
    return 0;
}
