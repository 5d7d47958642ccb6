/*
 * timerfd checks, for nacre's tests: timerfd_create, timerfd_settime (relative
 * and absolute, one-shot and interval, the old value), timerfd_gettime, read of
 * the expiration count (blocking, non-blocking, short buffers), readv, poll and
 * ppoll, dup, fstat, close, and the errors Linux gives.
 *
 * Build: gcc -static -O2 timerfd.c -o timerfd   (or musl-gcc -static -O2)
 * Usage: timerfd        the checks: one line per check, "ok <name>" or
 *                       "FAIL <name>: <detail>"; exit code 0 when every check
 *                       passed, else 1
 *        timerfd read-disarmed
 *                       a blocking read of a timer that is not armed, which
 *                       Linux never returns from (nacre stops the app); prints
 *                       "reading" first
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL
#define NS_PER_SEC 1000000000LL
/* Longest any expected wake-up may come late (a loaded host, an emulated
 * guest kernel). */
#define LATE (2 * NS_PER_SEC)

/* ------------------------------------------------------------------------ */
/* Reporting */

static int failures;
static char detail[512];

static int bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return -1;
}

static int bad_call(const char *what, long r, int err)
{
    return bad("%s returned %ld, errno %d (%s)", what, r, err, strerror(err));
}

static int expect_errno(const char *what, long r, int err, int want)
{
    if (r == -1 && err == want)
        return 0;
    return bad("%s returned %ld, errno %d (%s), expected %s", what, r, err, strerror(err),
               strerror(want));
}

static void run_check(const char *name, int (*check)(void))
{
    detail[0] = '\0';
    if (check() == 0) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s\n", name, detail);
        failures++;
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Helpers */

static long long now_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * NS_PER_SEC + t.tv_nsec;
}

static struct timespec ts_of(long long ns)
{
    struct timespec t = {(time_t)(ns / NS_PER_SEC), (long)(ns % NS_PER_SEC)};
    return t;
}

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * NS_PER_SEC + t->tv_nsec;
}

/* Arms `fd`: first expiration after `value` ns (or at it, with TFD_TIMER_ABSTIME in
 * `flags`), then every `interval` ns. */
static int arm(int fd, int flags, long long value, long long interval)
{
    struct itimerspec its = {ts_of(interval), ts_of(value)};
    return timerfd_settime(fd, flags, &its, NULL);
}

static void sleep_ns(long long ns)
{
    struct timespec t = ts_of(ns);
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Reads the expiration count; -1 (errno set) on failure. */
static long long read_ticks(int fd)
{
    uint64_t ticks = 0;
    ssize_t n = read(fd, &ticks, sizeof ticks);
    if (n < 0)
        return -1;
    if (n != sizeof ticks) {
        errno = EIO;
        return -1;
    }
    return (long long)ticks;
}

/* A blocking read expected to return `want` expirations no earlier than `at`
 * on `clock`, and not much later. */
static int expect_blocking_read(int fd, clockid_t clock, long long at, long long want)
{
    long long ticks = read_ticks(fd);
    long long now = now_ns(clock);
    if (ticks != want)
        return bad_call("read (expected the count)", (long)ticks, errno);
    if (now < at)
        return bad("read returned %lld ns before the deadline", at - now);
    if (now > at + LATE)
        return bad("read returned %lld ns after the deadline", now - at);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Checks */

static int check_create_flags(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return bad_call("timerfd_create", fd, errno);
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    close(fd);
    if ((fl & O_ACCMODE) != O_RDWR || !(fl & O_NONBLOCK))
        return bad("F_GETFL %#o: expected O_RDWR | O_NONBLOCK", fl);
    if (fdfl != FD_CLOEXEC)
        return bad("F_GETFD %d: expected FD_CLOEXEC", fdfl);
    fd = timerfd_create(CLOCK_MONOTONIC, 0);
    fl = fcntl(fd, F_GETFL);
    fdfl = fcntl(fd, F_GETFD);
    close(fd);
    if (fl != O_RDWR || fdfl != 0)
        return bad("without flags: F_GETFL %#o, F_GETFD %d", fl, fdfl);
    return 0;
}

static int check_create_on_each_clock(void)
{
    static const clockid_t ok[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int fd = timerfd_create(ok[i], 0);
        if (fd < 0)
            return bad("clock %d: %s", ok[i], strerror(errno));
        close(fd);
    }
    return 0;
}

static int check_create_invalid(void)
{
    static const clockid_t refused[] = {CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID,
                                        CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE, 12345};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        errno = 0;
        long r = timerfd_create(refused[i], 0);
        if (expect_errno("timerfd_create(bad clock)", r, errno, EINVAL))
            return -1;
    }
    errno = 0;
    long r = timerfd_create(CLOCK_MONOTONIC, 4);
    return expect_errno("timerfd_create(flags 4)", r, errno, EINVAL);
}

static int check_fstat(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct stat st;
    int r = fstat(fd, &st);
    close(fd);
    if (r != 0)
        return bad_call("fstat", r, errno);
    /* An anonymous inode: no file type, owner read and write. */
    if (st.st_mode != 0600 || st.st_size != 0 || st.st_nlink != 1)
        return bad("mode %#o size %lld nlink %lu", st.st_mode, (long long)st.st_size,
                   (unsigned long)st.st_nlink);
    return 0;
}

static int check_gettime_disarmed(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec cur = {{1, 1}, {1, 1}};
    int r = timerfd_gettime(fd, &cur);
    close(fd);
    if (r != 0)
        return bad_call("timerfd_gettime", r, errno);
    if (ns_of(&cur.it_value) != 0 || ns_of(&cur.it_interval) != 0)
        return bad("a new timer reads %lld/%lld", ns_of(&cur.it_value), ns_of(&cur.it_interval));
    return 0;
}

static int check_read_nonblocking_eagain(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    errno = 0;
    long long r = read_ticks(fd);
    if (expect_errno("read of a disarmed timer", (long)r, errno, EAGAIN)) {
        close(fd);
        return -1;
    }
    arm(fd, 0, 10 * NS_PER_SEC, 0);
    errno = 0;
    r = read_ticks(fd);
    close(fd);
    return expect_errno("read of a timer 10 s away", (long)r, errno, EAGAIN);
}

static int check_read_short_buffer_einval(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    arm(fd, TFD_TIMER_ABSTIME, 1, 0);
    char b[7];
    errno = 0;
    long r = read(fd, b, sizeof b);
    int err = errno;
    long long ticks = read_ticks(fd);
    close(fd);
    if (expect_errno("read of 7 bytes", r, err, EINVAL))
        return -1;
    if (ticks != 1)
        return bad("the short read consumed the expiration: then read %lld", ticks);
    return 0;
}

static int check_one_shot_relative(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    long long start = now_ns(CLOCK_MONOTONIC);
    if (arm(fd, 0, 20 * MS, 0) != 0)
        return bad_call("timerfd_settime", -1, errno);
    struct itimerspec cur;
    timerfd_gettime(fd, &cur);
    if (ns_of(&cur.it_value) <= 0 || ns_of(&cur.it_value) > 20 * MS ||
        ns_of(&cur.it_interval) != 0)
        return bad("armed: gettime %lld/%lld", ns_of(&cur.it_value), ns_of(&cur.it_interval));
    if (expect_blocking_read(fd, CLOCK_MONOTONIC, start + 20 * MS, 1))
        return -1;
    timerfd_gettime(fd, &cur);
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, 0);
    close(fd);
    if (ns_of(&cur.it_value) != 0 || ns_of(&cur.it_interval) != 0)
        return bad("expired: gettime %lld/%lld", ns_of(&cur.it_value), ns_of(&cur.it_interval));
    if (n != 0)
        return bad("expired and read: poll says %d (revents %#x)", n, p.revents);
    return 0;
}

static int check_interval_counts_expirations(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    long long start = now_ns(CLOCK_MONOTONIC);
    arm(fd, 0, 10 * MS, 10 * MS);
    sleep_ns(55 * MS);
    long long ticks = read_ticks(fd);
    long long elapsed = now_ns(CLOCK_MONOTONIC) - start;
    struct itimerspec cur;
    timerfd_gettime(fd, &cur);
    close(fd);
    /* Every 10 ms period begun since the first expiration at 10 ms. */
    long long most = elapsed / (10 * MS);
    if (ticks < 5 || ticks > most)
        return bad("read %lld after %lld ns: expected 5 to %lld", ticks, elapsed, most);
    if (ns_of(&cur.it_interval) != 10 * MS || ns_of(&cur.it_value) <= 0 ||
        ns_of(&cur.it_value) > 10 * MS)
        return bad("gettime %lld/%lld", ns_of(&cur.it_value), ns_of(&cur.it_interval));
    return 0;
}

static int check_interval_blocking_reads(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    long long start = now_ns(CLOCK_MONOTONIC);
    arm(fd, 0, 15 * MS, 15 * MS);
    for (int i = 1; i <= 3; i++) {
        long long ticks = read_ticks(fd);
        long long now = now_ns(CLOCK_MONOTONIC);
        if (ticks < 1)
            return bad_call("read", (long)ticks, errno);
        if (now < start + i * 15 * MS)
            return bad("read %d returned at %lld ns, before %lld", i, now - start, i * 15 * MS);
        /* A late wake-up counts the periods it missed: resynchronize. */
        i += (int)ticks - 1;
    }
    close(fd);
    return 0;
}

static int check_abstime_monotonic(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    long long at = now_ns(CLOCK_MONOTONIC) + 20 * MS;
    if (arm(fd, TFD_TIMER_ABSTIME, at, 0) != 0)
        return bad_call("timerfd_settime", -1, errno);
    int r = expect_blocking_read(fd, CLOCK_MONOTONIC, at, 1);
    close(fd);
    return r;
}

static int check_abstime_realtime(void)
{
    int fd = timerfd_create(CLOCK_REALTIME, 0);
    long long at = now_ns(CLOCK_REALTIME) + 20 * MS;
    if (arm(fd, TFD_TIMER_ABSTIME, at, 0) != 0)
        return bad_call("timerfd_settime", -1, errno);
    int r = expect_blocking_read(fd, CLOCK_REALTIME, at, 1);
    close(fd);
    return r;
}

static int check_abstime_in_the_past_expires_at_once(void)
{
    int fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    /* One second after the epoch. */
    arm(fd, TFD_TIMER_ABSTIME, NS_PER_SEC, 0);
    long long ticks = read_ticks(fd);
    close(fd);
    if (ticks != 1)
        return bad_call("read", (long)ticks, errno);
    return 0;
}

static int check_boottime_relative(void)
{
    int fd = timerfd_create(CLOCK_BOOTTIME, 0);
    long long start = now_ns(CLOCK_BOOTTIME);
    arm(fd, 0, 10 * MS, 0);
    int r = expect_blocking_read(fd, CLOCK_BOOTTIME, start + 10 * MS, 1);
    close(fd);
    return r;
}

static int check_settime_returns_the_old_value(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec first = {ts_of(2 * NS_PER_SEC), ts_of(NS_PER_SEC)}, old;
    struct itimerspec none = {{0, 0}, {0, 0}};
    timerfd_settime(fd, 0, &first, &old);
    if (ns_of(&old.it_value) != 0 || ns_of(&old.it_interval) != 0) {
        close(fd);
        return bad("first old value %lld/%lld", ns_of(&old.it_value), ns_of(&old.it_interval));
    }
    int r = timerfd_settime(fd, 0, &none, &old);
    struct itimerspec cur;
    timerfd_gettime(fd, &cur);
    close(fd);
    if (r != 0)
        return bad_call("timerfd_settime (disarm)", r, errno);
    if (ns_of(&old.it_interval) != 2 * NS_PER_SEC || ns_of(&old.it_value) <= 0 ||
        ns_of(&old.it_value) > NS_PER_SEC)
        return bad("old value %lld/%lld", ns_of(&old.it_value), ns_of(&old.it_interval));
    if (ns_of(&cur.it_value) != 0 || ns_of(&cur.it_interval) != 0)
        return bad("disarmed: gettime %lld/%lld", ns_of(&cur.it_value), ns_of(&cur.it_interval));
    return 0;
}

static int check_settime_invalid(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {{0, 0}, {0, 1000000000}};
    errno = 0;
    long r = timerfd_settime(fd, 0, &its, NULL);
    if (expect_errno("timerfd_settime(tv_nsec 1e9)", r, errno, EINVAL))
        return close(fd), -1;
    struct itimerspec neg = {{0, 0}, {-1, 0}};
    errno = 0;
    r = timerfd_settime(fd, 0, &neg, NULL);
    if (expect_errno("timerfd_settime(tv_sec -1)", r, errno, EINVAL))
        return close(fd), -1;
    struct itimerspec fine = {{0, 0}, {1, 0}};
    errno = 0;
    r = timerfd_settime(fd, 4, &fine, NULL);
    close(fd);
    if (expect_errno("timerfd_settime(flags 4)", r, errno, EINVAL))
        return -1;
    errno = 0;
    r = timerfd_settime(0, 0, &fine, NULL);
    if (expect_errno("timerfd_settime(stdin)", r, errno, EINVAL))
        return -1;
    errno = 0;
    r = timerfd_settime(999, 0, &fine, NULL);
    if (expect_errno("timerfd_settime(999)", r, errno, EBADF))
        return -1;
    struct itimerspec cur;
    errno = 0;
    r = timerfd_gettime(1, &cur);
    return expect_errno("timerfd_gettime(stdout)", r, errno, EINVAL);
}

static int check_cancel_on_set_accepted(void)
{
    int fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    long long at = now_ns(CLOCK_REALTIME) + 10 * NS_PER_SEC;
    int r = arm(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, at, 0);
    close(fd);
    if (r != 0)
        return bad_call("timerfd_settime(ABSTIME | CANCEL_ON_SET)", r, errno);
    return 0;
}

static int check_poll_waits_for_expiry(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct pollfd p = {fd, POLLIN | POLLOUT, 0};
    int n = poll(&p, 1, 0);
    if (n != 0)
        return close(fd), bad("disarmed: poll returned %d (revents %#x)", n, p.revents);
    long long start = now_ns(CLOCK_MONOTONIC);
    arm(fd, 0, 20 * MS, 0);
    n = poll(&p, 1, -1);
    long long now = now_ns(CLOCK_MONOTONIC);
    long long ticks = read_ticks(fd);
    close(fd);
    if (n != 1 || p.revents != POLLIN)
        return bad("armed: poll returned %d, revents %#x (expected POLLIN only)", n, p.revents);
    if (now < start + 20 * MS || now > start + 20 * MS + LATE)
        return bad("poll returned %lld ns after arming a 20 ms timer", now - start);
    if (ticks != 1)
        return bad_call("read after poll", (long)ticks, errno);
    return 0;
}

static int check_poll_timeout_before_expiry(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    arm(fd, 0, 10 * NS_PER_SEC, 0);
    struct pollfd p = {fd, POLLIN, 0};
    long long start = now_ns(CLOCK_MONOTONIC);
    int n = poll(&p, 1, 10);
    long long elapsed = now_ns(CLOCK_MONOTONIC) - start;
    close(fd);
    if (n != 0 || p.revents != 0)
        return bad("poll returned %d, revents %#x", n, p.revents);
    if (elapsed < 10 * MS || elapsed > LATE)
        return bad("a 10 ms poll took %lld ns", elapsed);
    return 0;
}

static int check_ppoll_earliest_of_two(void)
{
    int slow = timerfd_create(CLOCK_MONOTONIC, 0), fast = timerfd_create(CLOCK_REALTIME, 0);
    long long start = now_ns(CLOCK_MONOTONIC);
    arm(slow, 0, 10 * NS_PER_SEC, 0);
    arm(fast, 0, 20 * MS, 0);
    struct pollfd p[2] = {{slow, POLLIN, 0}, {fast, POLLIN, 0}};
    struct timespec limit = ts_of(5 * NS_PER_SEC);
    int n = ppoll(p, 2, &limit, NULL);
    long long elapsed = now_ns(CLOCK_MONOTONIC) - start;
    close(slow);
    close(fast);
    if (n != 1 || p[0].revents != 0 || p[1].revents != POLLIN)
        return bad("ppoll returned %d, revents %#x %#x", n, p[0].revents, p[1].revents);
    if (elapsed < 20 * MS || elapsed > 20 * MS + LATE)
        return bad("ppoll returned after %lld ns", elapsed);
    return 0;
}

static int check_dup_shares_the_timer(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int other = dup(fd);
    arm(fd, TFD_TIMER_ABSTIME, 1, 0);
    long long ticks = read_ticks(other);
    errno = 0;
    long long again = read_ticks(fd);
    int err = errno;
    close(fd);
    close(other);
    if (ticks != 1)
        return bad("read through the dup: %lld", ticks);
    return expect_errno("read after the dup consumed it", (long)again, err, EAGAIN);
}

static int check_readv_split_count(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    arm(fd, TFD_TIMER_ABSTIME, 1, 0);
    unsigned char b[16];
    memset(b, 0xAA, sizeof b);
    struct iovec iov[2] = {{b, 3}, {b + 3, 13}};
    ssize_t n = readv(fd, iov, 2);
    close(fd);
    uint64_t ticks;
    memcpy(&ticks, b, sizeof ticks);
    if (n != 8 || ticks != 1 || b[8] != 0xAA)
        return bad("readv returned %zd, count %llu, byte 8 %#x", n, (unsigned long long)ticks,
                   b[8]);
    return 0;
}

static int check_not_a_file(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    char b[8] = {0};
    errno = 0;
    long r = write(fd, b, sizeof b);
    if (expect_errno("write", r, errno, EINVAL))
        return close(fd), -1;
    errno = 0;
    r = pread(fd, b, sizeof b, 0);
    if (expect_errno("pread", r, errno, ESPIPE))
        return close(fd), -1;
    r = lseek(fd, 5, SEEK_SET);
    close(fd);
    if (r != 0)
        return bad_call("lseek (expected 0)", r, errno);
    return 0;
}

static int check_close(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    if (close(fd) != 0)
        return bad_call("close", -1, errno);
    errno = 0;
    long long r = read_ticks(fd);
    return expect_errno("read after close", (long)r, errno, EBADF);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "read-disarmed") == 0) {
        int fd = timerfd_create(CLOCK_MONOTONIC, 0);
        printf("reading\n");
        fflush(stdout);
        long long r = read_ticks(fd);
        printf("read returned %lld\n", r);
        return 1;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: timerfd [read-disarmed]\n");
        return 2;
    }
    run_check("create_flags", check_create_flags);
    run_check("create_on_each_clock", check_create_on_each_clock);
    run_check("create_invalid", check_create_invalid);
    run_check("fstat", check_fstat);
    run_check("gettime_disarmed", check_gettime_disarmed);
    run_check("read_nonblocking_eagain", check_read_nonblocking_eagain);
    run_check("read_short_buffer_einval", check_read_short_buffer_einval);
    run_check("one_shot_relative", check_one_shot_relative);
    run_check("interval_counts_expirations", check_interval_counts_expirations);
    run_check("interval_blocking_reads", check_interval_blocking_reads);
    run_check("abstime_monotonic", check_abstime_monotonic);
    run_check("abstime_realtime", check_abstime_realtime);
    run_check("abstime_in_the_past_expires_at_once", check_abstime_in_the_past_expires_at_once);
    run_check("boottime_relative", check_boottime_relative);
    run_check("settime_returns_the_old_value", check_settime_returns_the_old_value);
    run_check("settime_invalid", check_settime_invalid);
    run_check("cancel_on_set_accepted", check_cancel_on_set_accepted);
    run_check("poll_waits_for_expiry", check_poll_waits_for_expiry);
    run_check("poll_timeout_before_expiry", check_poll_timeout_before_expiry);
    run_check("ppoll_earliest_of_two", check_ppoll_earliest_of_two);
    run_check("dup_shares_the_timer", check_dup_shares_the_timer);
    run_check("readv_split_count", check_readv_split_count);
    run_check("not_a_file", check_not_a_file);
    run_check("close", check_close);
    return failures ? 1 : 0;
}
