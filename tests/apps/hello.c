/*
 * The smallest nacre test app: one line on stdout through printf, then a
 * non-zero exit code so the tests can tell the app's code from nacre's own.
 *
 * Build: gcc -static -O2 hello.c -o hello
 * Expected: stdout is exactly "hello from nacre\n", exit code 42.
 */
#include <stdio.h>

int main(void)
{
    printf("hello from nacre\n");
    return 42;
}
