/*
 * Writes nothing until it has slept, for nacre's boot-time statistics: the boot
 * ends when the firmware enters the app, not at the app's first output.
 *
 * Build: gcc -static -O2 late_output.c -o late_output
 * Usage: late_output
 * Sleeps 500 ms, then prints "late\n" on stdout and exits with code 0.
 */
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec half = {0, 500 * 1000 * 1000};
    while (nanosleep(&half, &half) != 0) {
    }
    fputs("late\n", stdout);
    return 0;
}
