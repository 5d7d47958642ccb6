/*
 * A dietlibc program, for nacre's tests: dietlibc's start-up code differs from
 * glibc's and musl's (it reads the auxiliary vector for AT_SYSINFO_EHDR only,
 * and finds the vDSO's functions through its section headers), so it is a
 * third libc whose static programs must start and read clocks.
 *
 * Build: diet gcc -O2 diet_clock.c -o diet_clock
 * Prints "hello from dietlibc", then one line per check, "ok <name>" or
 * "FAIL <name>: <detail>". Exit code 0 when every check passed, else 1.
 * Output goes through write(2) in whole lines (dietlibc's printf writes each
 * piece of its format with a syscall of its own).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000LL
#define SLEEP_NS 10000000L

static int failures;
static char detail[256];

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1)
        n = sizeof line - 1;
    if (write(1, line, (size_t)n) != n)
        failures++;
}

static int bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return -1;
}

static void run_check(const char *name, int (*check)(void))
{
    detail[0] = '\0';
    if (check() == 0) {
        say("ok %s\n", name);
    } else {
        say("FAIL %s: %s\n", name, detail);
        failures++;
    }
}

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * NS_PER_SEC + t->tv_nsec;
}

static int check_monotonic_never_goes_back(void)
{
    struct timespec t;
    long long last = -1;
    for (int i = 0; i < 10000; i++) {
        if (clock_gettime(CLOCK_MONOTONIC, &t) != 0)
            return bad("clock_gettime: %s", strerror(errno));
        if (t.tv_nsec < 0 || t.tv_nsec >= NS_PER_SEC || ns_of(&t) < last)
            return bad("reading %d: %lld after %lld", i, ns_of(&t), last);
        last = ns_of(&t);
    }
    return 0;
}

static int check_realtime_after_2020(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0)
        return bad("clock_gettime: %s", strerror(errno));
    /* 2020-01-01T00:00:00Z. */
    if (t.tv_sec < 1577836800)
        return bad("CLOCK_REALTIME reads %lld", (long long)t.tv_sec);
    return 0;
}

static int check_gettimeofday_and_time_agree(void)
{
    struct timespec a, b;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &a);
    if (gettimeofday(&tv, NULL) != 0)
        return bad("gettimeofday: %s", strerror(errno));
    time_t t = time(NULL);
    clock_gettime(CLOCK_REALTIME, &b);
    long long us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
    if (us < ns_of(&a) / 1000 || us > ns_of(&b) / 1000)
        return bad("gettimeofday %lld us not within [%lld, %lld] ns", us, ns_of(&a), ns_of(&b));
    if (t < a.tv_sec - 1 || t > b.tv_sec)
        return bad("time() %lld not within [%lld - 1, %lld]", (long long)t, (long long)a.tv_sec,
                   (long long)b.tv_sec);
    return 0;
}

static int check_nanosleep_advances_monotonic(void)
{
    struct timespec a, b, req = {0, SLEEP_NS};
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (nanosleep(&req, NULL) != 0)
        return bad("nanosleep: %s", strerror(errno));
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long d = ns_of(&b) - ns_of(&a);
    if (d < SLEEP_NS || d > 10 * NS_PER_SEC)
        return bad("monotonic advanced %lld ns across a %ld ns sleep", d, SLEEP_NS);
    return 0;
}

int main(void)
{
    say("hello from dietlibc\n");
    run_check("monotonic_never_goes_back", check_monotonic_never_goes_back);
    run_check("realtime_after_2020", check_realtime_after_2020);
    run_check("gettimeofday_and_time_agree", check_gettimeofday_and_time_agree);
    run_check("nanosleep_advances_monotonic", check_nanosleep_advances_monotonic);
    return failures ? 1 : 0;
}
