/*
 * Exits with the code given as argv[1], for nacre's exit-status tests: nacre
 * must exit with the app's own code, whatever it is (0, small, or 255).
 *
 * Build: gcc -static -O2 exit_code.c -o exit_code
 * Usage: exit_code N
 * Prints: "exiting with N\n" on stdout (flushed before exiting), then exits
 * with code N (taken modulo 256 by the kernel, as for any process). Exit code
 * 2 with a message on stderr without an argument.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: exit_code N\n");
        return 2;
    }
    int code = atoi(argv[1]);
    printf("exiting with %d\n", code);
    fflush(stdout);
    exit(code);
}
