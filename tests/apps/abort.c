/*
 * Ends with abort(), for nacre's signal tests: libc raises SIGABRT against
 * the process itself, and nacre must exit the way a shell reports a process
 * killed by SIGABRT (128 + 6 = 134).
 *
 * Build: gcc -static -O2 abort.c -o abort
 * Prints: "about to abort\n" on stdout (flushed first), then aborts; natively
 * the process is killed by SIGABRT, under nacre the exit code is 134.
 */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    printf("about to abort\n");
    fflush(stdout);
    abort();
}
