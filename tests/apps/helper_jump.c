/*
 * An app that misbehaves on purpose: it jumps to a `ud2` in nacre's helper page (the
 * page /proc/self/maps lists as [nacre-helper], user-accessible because it holds the
 * SYSCALL trampoline and the ring-3 copy helpers). The firmware must treat that as
 * the app's own illegal instruction (SIGILL, exit 132), never as the end of a copy it
 * did not start.
 *
 * Build: gcc -static -O2 helper_jump.c -o helper_jump
 * Usage: helper_jump N   (jump to the N-th ud2 of the page, counting from 0)
 * Prints "jumping to ud2 N at 0x..." first; exits 2 if it cannot find the page or
 * the ud2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int want = atoi(argv[1]);
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return 2;
    char line[256];
    unsigned long start = 0;
    while (fgets(line, sizeof line, maps)) {
        if (strstr(line, "[nacre-helper]")) {
            start = strtoul(line, NULL, 16);
            break;
        }
    }
    fclose(maps);
    if (!start)
        return 2;
    const unsigned char *page = (const unsigned char *)start;
    int seen = 0;
    for (int i = 0; i + 1 < 4096; i++) {
        if (page[i] == 0x0f && page[i + 1] == 0x0b) {
            if (seen == want) {
                printf("jumping to ud2 %d at %#lx\n", want, start + i);
                fflush(stdout);
                ((void (*)(void))(start + i))();
                return 3;
            }
            seen++;
        }
    }
    return 2;
}
