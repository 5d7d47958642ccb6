/*
 * Copies stdin to stdout with read(2) and write(2) until end of input, for
 * nacre's console tests: every byte the host feeds nacre's stdin must come
 * back on nacre's stdout, in order and unchanged. Short writes are resumed.
 *
 * Build: gcc -static -O2 cat_stdin.c -o cat_stdin
 * Prints: exactly the bytes read from stdin. Exit code 0 at end of input,
 * 1 (with a message on stderr) if a read or write fails.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char buffer[16 * 1024];

/* Writes all of buf[0..len) to stdout; returns 0 or -1 with errno set. */
static int write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(void)
{
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "cat_stdin: read: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            return 0;
        if (write_all(buffer, (size_t)n) != 0) {
            fprintf(stderr, "cat_stdin: write: %s\n", strerror(errno));
            return 1;
        }
    }
}
