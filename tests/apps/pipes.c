/*
 * Pipes, eventfds, epoll, poll and select as a static Linux program uses them:
 * pipe and pipe2 (flags, end of file, a full pipe, atomic writes, readv/writev,
 * dup and close, EPIPE and SIGPIPE), a producer and a consumer thread over a pipe,
 * eventfd counters and semaphores (also between threads), epoll level- and
 * edge-triggered, one-shot, nested, with timeouts, a timerfd and a temporary signal
 * mask, the errors epoll_ctl gives, and poll, ppoll, select and pselect over pipes
 * and eventfds. Run natively and under nacre, it must print the same.
 *
 * Build: gcc -static -O2 -pthread pipes.c -o pipes (or musl-gcc)
 * Usage: pipes           run every check: "ok NAME" or "FAIL NAME: DETAIL" per
 *                        line; exit 0 when all passed
 *        pipes sigpipe   write to a pipe without readers, SIGPIPE's default action
 *                        ends the app (exit 141 in a shell)
 *        pipes stuck     read a pipe only this thread could write to (hangs on
 *                        Linux; nacre stops the app)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif

static int failures;
static char detail[256];
#define BAD(...) (snprintf(detail, sizeof detail, __VA_ARGS__), detail)

static void report(const char *name, const char *fail)
{
    if (fail) {
        printf("FAIL %s: %s\n", name, fail);
        failures++;
    } else {
        printf("ok %s\n", name);
    }
    fflush(stdout);
}

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static void close_pair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* poll one descriptor for `events` without waiting: its revents, or -1. */
static int poll_now(int fd, short events)
{
    struct pollfd p = {fd, events, 0};
    int n = poll(&p, 1, 0);
    return n < 0 ? -1 : p.revents;
}

/* --- pipes ------------------------------------------------------------------ */

static const char *check_pipe_basics(void)
{
    int p[2];
    if (pipe(p) != 0)
        return BAD("pipe: errno %d", errno);
    char buf[16] = {0};
    if (write(p[1], "hello", 5) != 5)
        return BAD("write: errno %d", errno);
    int avail = -1;
    if (ioctl(p[0], FIONREAD, &avail) != 0 || avail != 5)
        return BAD("FIONREAD %d (errno %d)", avail, errno);
    ssize_t n = read(p[0], buf, sizeof buf);
    if (n != 5 || memcmp(buf, "hello", 5) != 0)
        return BAD("read %zd: '%.5s'", n, buf);
    struct stat r, w;
    if (fstat(p[0], &r) != 0 || fstat(p[1], &w) != 0)
        return BAD("fstat: errno %d", errno);
    if (!S_ISFIFO(r.st_mode) || !S_ISFIFO(w.st_mode) || r.st_ino != w.st_ino)
        return BAD("fstat: modes %o %o, inodes %lu %lu", r.st_mode, w.st_mode,
                   (unsigned long)r.st_ino, (unsigned long)w.st_ino);
    if ((fcntl(p[0], F_GETFL) & O_ACCMODE) != O_RDONLY ||
        (fcntl(p[1], F_GETFL) & O_ACCMODE) != O_WRONLY)
        return BAD("F_GETFL %#x %#x", fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));
    errno = 0;
    if (read(p[1], buf, 1) != -1 || errno != EBADF)
        return BAD("read of the write end: errno %d", errno);
    errno = 0;
    if (write(p[0], "x", 1) != -1 || errno != EBADF)
        return BAD("write to the read end: errno %d", errno);
    errno = 0;
    if (lseek(p[0], 0, SEEK_CUR) != -1 || errno != ESPIPE)
        return BAD("lseek: errno %d", errno);
    errno = 0;
    if (pread(p[0], buf, 1, 0) != -1 || errno != ESPIPE)
        return BAD("pread: errno %d", errno);
    if (write(p[1], "", 0) != 0 || read(p[0], buf, 0) != 0)
        return BAD("zero-length transfers: errno %d", errno);
    /* Bad buffers: EFAULT, and nothing is lost or added. */
    char *volatile bad = (char *)8;
    errno = 0;
    if (write(p[1], bad, 300) != -1 || errno != EFAULT)
        return BAD("write from a bad buffer: errno %d", errno);
    write(p[1], "kept", 4);
    errno = 0;
    if (read(p[0], bad, 4) != -1 || errno != EFAULT)
        return BAD("read into a bad buffer: errno %d", errno);
    memset(buf, 0, sizeof buf);
    if (read(p[0], buf, sizeof buf) != 4 || memcmp(buf, "kept", 4) != 0)
        return BAD("after the faults: '%.4s'", buf);
    close_pair(p);
    return NULL;
}

static const char *check_pipe2_flags(void)
{
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        return BAD("pipe2: errno %d", errno);
    for (int i = 0; i < 2; i++) {
        if (fcntl(p[i], F_GETFD) != FD_CLOEXEC)
            return BAD("end %d: F_GETFD %d", i, fcntl(p[i], F_GETFD));
        if (!(fcntl(p[i], F_GETFL) & O_NONBLOCK))
            return BAD("end %d: F_GETFL %#x", i, fcntl(p[i], F_GETFL));
    }
    char c;
    errno = 0;
    if (read(p[0], &c, 1) != -1 || errno != EAGAIN)
        return BAD("read of an empty non-blocking pipe: errno %d", errno);
    /* F_SETFL turns blocking back on; F_SETFD and F_DUPFD_CLOEXEC work too. */
    if (fcntl(p[0], F_SETFL, 0) != 0 || (fcntl(p[0], F_GETFL) & O_NONBLOCK))
        return BAD("F_SETFL: %#x", fcntl(p[0], F_GETFL));
    if (fcntl(p[0], F_SETFD, 0) != 0 || fcntl(p[0], F_GETFD) != 0)
        return BAD("F_SETFD: %d", fcntl(p[0], F_GETFD));
    int d = fcntl(p[1], F_DUPFD_CLOEXEC, 100);
    if (d < 100 || fcntl(d, F_GETFD) != FD_CLOEXEC)
        return BAD("F_DUPFD_CLOEXEC gave %d", d);
    close(d);
    close_pair(p);
    int q[2];
    errno = 0;
    if (pipe2(q, 0x1) != -1 || errno != EINVAL)
        return BAD("pipe2 with a bad flag: errno %d", errno);
    return NULL;
}

static const char *check_pipe_eof(void)
{
    int p[2];
    pipe(p);
    write(p[1], "ab", 2);
    close(p[1]);
    int re = poll_now(p[0], POLLIN);
    if (re != (POLLIN | POLLHUP))
        return BAD("with data, no writer: revents %#x", re);
    char buf[8];
    if (read(p[0], buf, sizeof buf) != 2)
        return BAD("read the rest: errno %d", errno);
    if (read(p[0], buf, sizeof buf) != 0)
        return BAD("read at the end: errno %d", errno);
    re = poll_now(p[0], POLLIN);
    if (re != POLLHUP)
        return BAD("empty, no writer: revents %#x", re);
    close(p[0]);
    return NULL;
}

static const char *check_pipe_full(void)
{
    int p[2];
    pipe2(p, O_NONBLOCK);
    static char chunk[8192];
    memset(chunk, 'z', sizeof chunk);
    long total = 0;
    for (;;) {
        ssize_t n = write(p[1], chunk, 4096);
        if (n < 0)
            break;
        total += n;
    }
    if (errno != EAGAIN || total != 65536)
        return BAD("filled with %ld bytes, then errno %d", total, errno);
    int avail = 0;
    ioctl(p[0], FIONREAD, &avail);
    if (avail != 65536)
        return BAD("FIONREAD %d", avail);
    if (poll_now(p[1], POLLOUT) != 0)
        return BAD("full, yet POLLOUT");
    /* An atomic write that does not fit is refused whole. */
    char small[200];
    if (read(p[0], small, 100) != 100)
        return BAD("read 100: errno %d", errno);
    errno = 0;
    if (write(p[1], small, 200) != -1 || errno != EAGAIN)
        return BAD("a 200-byte write with room for 100: errno %d", errno);
    /* Room for a page: writable, and a larger write goes in part. */
    if (read(p[0], chunk, 4096 - 100) != 4096 - 100)
        return BAD("read the rest of a page: errno %d", errno);
    if (poll_now(p[1], POLLOUT) != POLLOUT)
        return BAD("a page free, revents %#x", poll_now(p[1], POLLOUT));
    ssize_t n = write(p[1], chunk, 4097);
    if (n != 4096)
        return BAD("a 4097-byte write with room for 4096 wrote %zd (errno %d)", n, errno);
    close_pair(p);
    return NULL;
}

static const char *check_pipe_vectors(void)
{
    int p[2];
    pipe(p);
    struct iovec out[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
    if (writev(p[1], out, 3) != 8)
        return BAD("writev: errno %d", errno);
    char a[2], b[10] = {0};
    struct iovec in[2] = {{a, 2}, {b, sizeof b}};
    ssize_t n = readv(p[0], in, 2);
    if (n != 8 || memcmp(a, "ab", 2) != 0 || memcmp(b, "cdefgh", 6) != 0)
        return BAD("readv %zd: '%.2s' '%.6s'", n, a, b);
    close_pair(p);
    return NULL;
}

static const char *check_pipe_dup_close(void)
{
    int p[2];
    pipe(p);
    int w2 = dup(p[1]);
    close(p[1]);
    if (poll_now(p[0], POLLIN) != 0)
        return BAD("a writer is left, yet revents %#x", poll_now(p[0], POLLIN));
    write(w2, "q", 1);
    /* dup2 over the last writer closes the write end. */
    int r2 = dup(p[0]);
    if (dup2(r2, w2) != w2)
        return BAD("dup2: errno %d", errno);
    char c;
    if (read(p[0], &c, 1) != 1 || c != 'q')
        return BAD("read what the dup wrote");
    if (read(p[0], &c, 1) != 0)
        return BAD("no writer left, yet no end of file");
    close(p[0]);
    close(r2);
    close(w2);
    return NULL;
}

static atomic_int handled;
static atomic_int last_signal;

static void on_signal(int sig)
{
    atomic_fetch_add(&handled, 1);
    atomic_store(&last_signal, sig);
}

static const char *check_epipe(void)
{
    int p[2];
    pipe(p);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    if (write(p[1], "x", 1) != -1 || errno != EPIPE)
        return BAD("ignored SIGPIPE: errno %d", errno);
    int re = poll_now(p[1], POLLOUT);
    if (re != (POLLOUT | POLLERR))
        return BAD("no reader: revents %#x", re);
    handled = 0;
    signal(SIGPIPE, on_signal);
    errno = 0;
    if (write(p[1], "x", 1) != -1 || errno != EPIPE)
        return BAD("caught SIGPIPE: errno %d", errno);
    if (handled != 1 || last_signal != SIGPIPE)
        return BAD("handler ran %d times, signal %d", (int)handled, (int)last_signal);
    signal(SIGPIPE, SIG_DFL);
    close(p[1]);
    return NULL;
}

/* A producer thread writes a pattern in odd-sized chunks, the consumer reads it
 * in other sizes: every byte arrives, in order, through a full pipe many times. */
#define STREAM_BYTES (512 * 1024)

static unsigned char pattern(long i) { return (unsigned char)(i * 7 + (i >> 9) + 3); }

static void *producer(void *arg)
{
    int fd = *(int *)arg;
    static unsigned char buf[9000];
    long sent = 0;
    for (int round = 0; sent < STREAM_BYTES; round++) {
        long n = 1 + (round * 977) % 8999;
        if (n > STREAM_BYTES - sent)
            n = STREAM_BYTES - sent;
        for (long i = 0; i < n; i++)
            buf[i] = pattern(sent + i);
        ssize_t w = write(fd, buf, n);
        if (w != n)
            return (void *)1;
        sent += n;
    }
    close(fd);
    return NULL;
}

static const char *check_pipe_threads(void)
{
    int p[2];
    pipe(p);
    pthread_t t;
    pthread_create(&t, NULL, producer, &p[1]);
    static unsigned char buf[7000];
    long got = 0;
    for (int round = 0;; round++) {
        ssize_t n = read(p[0], buf, 1 + (round * 331) % sizeof buf);
        if (n < 0)
            return BAD("read: errno %d", errno);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(got + i))
                return BAD("byte %ld is %u", got + i, buf[i]);
        got += n;
    }
    void *r;
    pthread_join(t, &r);
    close(p[0]);
    if (r != NULL || got != STREAM_BYTES)
        return BAD("producer %p, %ld bytes", r, got);
    return NULL;
}

/* A thread blocked in a pipe read, a signal: EINTR without SA_RESTART, the read
 * goes on with it. */
static int blocked_fd;
static atomic_int reader_started;

static void *blocked_reader(void *arg)
{
    (void)arg;
    char c = 0;
    atomic_store(&reader_started, 1);
    ssize_t n = read(blocked_fd, &c, 1);
    return (void *)(n == 1 ? (long)c : -(long)errno);
}

static long read_interrupted(int restart)
{
    int p[2];
    pipe(p);
    blocked_fd = p[0];
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGUSR1, &sa, NULL);
    reader_started = 0;
    pthread_t t;
    pthread_create(&t, NULL, blocked_reader, NULL);
    while (!reader_started)
        sched_yield();
    sleep_ms(20);
    pthread_kill(t, SIGUSR1);
    sleep_ms(20);
    write(p[1], "R", 1);
    void *r;
    pthread_join(t, &r);
    close_pair(p);
    signal(SIGUSR1, SIG_DFL);
    return (long)r;
}

static const char *check_pipe_read_interrupted(void)
{
    handled = 0;
    long r = read_interrupted(0);
    if (r != -EINTR || handled != 1)
        return BAD("without SA_RESTART: %ld, handler ran %d times", r, (int)handled);
    handled = 0;
    r = read_interrupted(1);
    if (r != 'R' || handled != 1)
        return BAD("with SA_RESTART: %ld, handler ran %d times", r, (int)handled);
    return NULL;
}

/* --- eventfd ---------------------------------------------------------------- */

static const char *check_eventfd_counter(void)
{
    int fd = eventfd(3, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return BAD("eventfd: errno %d", errno);
    if (fcntl(fd, F_GETFD) != FD_CLOEXEC || (fcntl(fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != (O_RDWR | O_NONBLOCK))
        return BAD("flags %#x %#x", fcntl(fd, F_GETFD), fcntl(fd, F_GETFL));
    uint64_t v = 0;
    if (read(fd, &v, 8) != 8 || v != 3)
        return BAD("first read %llu", (unsigned long long)v);
    errno = 0;
    if (read(fd, &v, 8) != -1 || errno != EAGAIN)
        return BAD("read at 0: errno %d", errno);
    if (poll_now(fd, POLLIN | POLLOUT) != POLLOUT)
        return BAD("at 0: revents %#x", poll_now(fd, POLLIN | POLLOUT));
    v = 2;
    write(fd, &v, 8);
    v = 5;
    write(fd, &v, 8);
    if (poll_now(fd, POLLIN | POLLOUT) != (POLLIN | POLLOUT))
        return BAD("at 7: revents %#x", poll_now(fd, POLLIN | POLLOUT));
    uint32_t small;
    errno = 0;
    if (read(fd, &small, 4) != -1 || errno != EINVAL)
        return BAD("4-byte read: errno %d", errno);
    errno = 0;
    if (write(fd, &small, 4) != -1 || errno != EINVAL)
        return BAD("4-byte write: errno %d", errno);
    if (read(fd, &v, 8) != 8 || v != 7)
        return BAD("sum %llu", (unsigned long long)v);
    v = UINT64_MAX;
    errno = 0;
    if (write(fd, &v, 8) != -1 || errno != EINVAL)
        return BAD("writing UINT64_MAX: errno %d", errno);
    v = UINT64_MAX - 1;
    if (write(fd, &v, 8) != 8)
        return BAD("writing the largest count: errno %d", errno);
    if (poll_now(fd, POLLOUT) != 0)
        return BAD("full, yet POLLOUT");
    v = 1;
    errno = 0;
    if (write(fd, &v, 8) != -1 || errno != EAGAIN)
        return BAD("writing past the largest count: errno %d", errno);
    v = 0;
    if (write(fd, &v, 8) != 8)
        return BAD("writing 0 to a full counter: errno %d", errno);
    uint64_t parts[2] = {0, 0};
    struct iovec iov[2] = {{&parts[0], 3}, {(char *)&parts[0] + 3, 13}};
    if (readv(fd, iov, 2) != 8 || parts[0] != UINT64_MAX - 1)
        return BAD("readv %llx", (unsigned long long)parts[0]);
    close(fd);
    return NULL;
}

static const char *check_eventfd_semaphore(void)
{
    int fd = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    uint64_t v = 0;
    for (int i = 0; i < 2; i++)
        if (read(fd, &v, 8) != 8 || v != 1)
            return BAD("read %d gave %llu", i, (unsigned long long)v);
    errno = 0;
    if (read(fd, &v, 8) != -1 || errno != EAGAIN)
        return BAD("third read: errno %d", errno);
    errno = 0;
    if (eventfd(0, 0x100) != -1 || errno != EINVAL)
        return BAD("a bad flag: errno %d", errno);
    close(fd);
    return NULL;
}

/* Worker threads take tokens from a semaphore eventfd (blocking) and report each
 * one on another eventfd. */
static int tokens, done_fd;
static atomic_int taken;

static void *token_worker(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        uint64_t v;
        if (read(tokens, &v, 8) != 8 || v != 1)
            return (void *)1;
        atomic_fetch_add(&taken, 1);
        v = 1;
        write(done_fd, &v, 8);
    }
    return NULL;
}

static const char *check_eventfd_threads(void)
{
    tokens = eventfd(0, EFD_SEMAPHORE);
    done_fd = eventfd(0, 0);
    taken = 0;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, token_worker, (void *)5L);
    for (int i = 0; i < 20; i++) {
        uint64_t v = 1;
        write(tokens, &v, 8);
        if (i % 3 == 0)
            sleep_ms(1);
    }
    uint64_t total = 0;
    while (total < 20) {
        uint64_t v;
        if (read(done_fd, &v, 8) != 8)
            return BAD("read done: errno %d", errno);
        total += v;
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    close(tokens);
    close(done_fd);
    if (bad || total != 20 || taken != 20)
        return BAD("bad %d, total %llu, taken %d", bad, (unsigned long long)total, (int)taken);
    return NULL;
}

/* --- epoll ------------------------------------------------------------------ */

/* epoll_wait without waiting: how many events, the first in *ev. */
static int wait_now(int ep, struct epoll_event *ev, int max)
{
    return epoll_wait(ep, ev, max, 0);
}

static int add(int ep, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static const char *check_epoll_level(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || fcntl(ep, F_GETFD) != FD_CLOEXEC)
        return BAD("epoll_create1: %d, errno %d", ep, errno);
    int p[2];
    pipe(p);
    if (add(ep, p[0], EPOLLIN, 0x123456789abcdefULL) != 0)
        return BAD("add: errno %d", errno);
    struct epoll_event ev[4];
    if (wait_now(ep, ev, 4) != 0)
        return BAD("empty pipe ready");
    write(p[1], "ab", 2);
    for (int i = 0; i < 3; i++) {
        memset(ev, 0, sizeof ev);
        int n = wait_now(ep, ev, 4);
        if (n != 1 || ev[0].events != EPOLLIN || ev[0].data.u64 != 0x123456789abcdefULL)
            return BAD("wait %d: %d events, %#x, data %llx", i, n, ev[0].events,
                       (unsigned long long)ev[0].data.u64);
    }
    char buf[4];
    read(p[0], buf, sizeof buf);
    if (wait_now(ep, ev, 4) != 0)
        return BAD("drained, still ready");
    close_pair(p);
    close(ep);
    return NULL;
}

static const char *check_epoll_edge(void)
{
    int ep = epoll_create(1);
    int p[2];
    pipe(p);
    int efd = eventfd(0, EFD_NONBLOCK);
    add(ep, p[0], EPOLLIN | EPOLLET, 1);
    add(ep, efd, EPOLLIN | EPOLLET, 2);
    struct epoll_event ev[4];
    if (wait_now(ep, ev, 4) != 0)
        return BAD("nothing written, yet ready");
    write(p[1], "a", 1);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 1)
        return BAD("first write not reported");
    if (wait_now(ep, ev, 4) != 0)
        return BAD("reported twice for one write");
    write(p[1], "b", 1);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 1)
        return BAD("a second write to a pipe not yet drained was not reported");
    if (wait_now(ep, ev, 4) != 0)
        return BAD("the second write reported twice");
    uint64_t v = 1;
    write(efd, &v, 8);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 2 || ev[0].events != EPOLLIN)
        return BAD("eventfd write not reported");
    if (wait_now(ep, ev, 4) != 0)
        return BAD("eventfd reported twice");
    write(efd, &v, 8);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 2)
        return BAD("second eventfd write not reported");
    /* Modifying re-arms an edge-triggered item that is ready. */
    struct epoll_event mod = {.events = EPOLLIN | EPOLLET, .data.u64 = 3};
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &mod);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 3)
        return BAD("MOD did not re-arm");
    /* A read wakes the writers' side (EPOLLOUT): for an item watching for input
     * alone it is no event, for one watching for output too it is. */
    int sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    add(ep, sem, EPOLLIN | EPOLLET, 4);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 4)
        return BAD("a ready semaphore not reported when added");
    read(sem, &v, 8);
    if (wait_now(ep, ev, 4) != 0)
        return BAD("a read was an input event");
    mod.events = EPOLLIN | EPOLLOUT | EPOLLET;
    mod.data.u64 = 5;
    epoll_ctl(ep, EPOLL_CTL_MOD, sem, &mod);
    if (wait_now(ep, ev, 4) != 1 || ev[0].events != (EPOLLIN | EPOLLOUT))
        return BAD("MOD for input and output: %#x", ev[0].events);
    read(sem, &v, 8);
    if (wait_now(ep, ev, 4) != 1 || ev[0].data.u64 != 5)
        return BAD("a read was no output event");
    close(sem);
    close_pair(p);
    close(efd);
    close(ep);
    return NULL;
}

static const char *check_epoll_oneshot(void)
{
    int ep = epoll_create1(0);
    int efd = eventfd(1, 0);
    add(ep, efd, EPOLLIN | EPOLLONESHOT, 7);
    struct epoll_event ev[2];
    if (wait_now(ep, ev, 2) != 1 || ev[0].data.u64 != 7)
        return BAD("not reported");
    uint64_t v = 1;
    write(efd, &v, 8);
    if (wait_now(ep, ev, 2) != 0)
        return BAD("reported again before MOD");
    struct epoll_event mod = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 8};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, efd, &mod) != 0)
        return BAD("MOD: errno %d", errno);
    if (wait_now(ep, ev, 2) != 1 || ev[0].data.u64 != 8)
        return BAD("not reported after MOD");
    if (epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL) != 0)
        return BAD("DEL: errno %d", errno);
    close(efd);
    close(ep);
    return NULL;
}

#define EXPECT_ERR(call, err)                                                   \
    do {                                                                        \
        errno = 0;                                                              \
        if ((call) != -1 || errno != (err))                                     \
            return BAD("%s: errno %d, expected %d", #call, errno, err);         \
    } while (0)

static const char *check_epoll_errors(void)
{
    int ep = epoll_create1(0);
    int p[2];
    pipe(p);
    struct epoll_event ev = {.events = EPOLLIN};
    EXPECT_ERR(syscall(SYS_epoll_create, 0), EINVAL);
    EXPECT_ERR(epoll_create1(1), EINVAL);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
        return BAD("add: errno %d", errno);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), EEXIST);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &ev), ENOENT);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_DEL, p[1], &ev), ENOENT);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev), EINVAL);
    EXPECT_ERR(epoll_ctl(p[0], EPOLL_CTL_ADD, p[1], &ev), EINVAL);
    EXPECT_ERR(epoll_ctl(ep, 99, p[1], &ev), EINVAL);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_ADD, 999, &ev), EBADF);
    EXPECT_ERR(epoll_ctl(999, EPOLL_CTL_ADD, p[0], &ev), EBADF);
    struct epoll_event excl = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &excl), EINVAL);
    int file = open("/proc/self/exe", O_RDONLY);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev), EPERM);
    close(file);
    int null = open("/dev/null", O_RDWR);
    EXPECT_ERR(epoll_ctl(ep, EPOLL_CTL_ADD, null, &ev), EPERM);
    close(null);
    struct epoll_event out[1];
    EXPECT_ERR(epoll_wait(ep, out, 0, 0), EINVAL);
    EXPECT_ERR(epoll_wait(p[0], out, 1, 0), EINVAL);
    EXPECT_ERR(epoll_wait(999, out, 1, 0), EBADF);
    char c;
    EXPECT_ERR(read(ep, &c, 1), EINVAL);
    close_pair(p);
    close(ep);
    return NULL;
}

static const char *check_epoll_timeouts(void)
{
    int ep = epoll_create1(0);
    int p[2];
    pipe(p);
    add(ep, p[0], EPOLLIN, 0);
    struct epoll_event ev[1];
    long long start = now_ns();
    int n = epoll_wait(ep, ev, 1, 30);
    long long ms = (now_ns() - start) / 1000000;
    if (n != 0 || ms < 29 || ms > 5000)
        return BAD("epoll_wait 30 ms: %d after %lld ms", n, ms);
    start = now_ns();
    n = epoll_pwait(ep, ev, 1, 20, NULL);
    ms = (now_ns() - start) / 1000000;
    if (n != 0 || ms < 19 || ms > 5000)
        return BAD("epoll_pwait 20 ms: %d after %lld ms", n, ms);
    struct timespec ts = {0, 25 * 1000000L};
    start = now_ns();
    n = (int)syscall(SYS_epoll_pwait2, ep, ev, 1, &ts, NULL, 8);
    ms = (now_ns() - start) / 1000000;
    if (n != 0 || ms < 24 || ms > 5000)
        return BAD("epoll_pwait2 25 ms: %d after %lld ms (errno %d)", n, ms, errno);
    struct timespec bad = {0, 1000000000L};
    EXPECT_ERR(syscall(SYS_epoll_pwait2, ep, ev, 1, &bad, NULL, 8), EINVAL);
    close_pair(p);
    close(ep);
    return NULL;
}

static int wake_fd;

static void *write_later(void *arg)
{
    sleep_ms(20);
    write(wake_fd, arg, strlen(arg));
    return NULL;
}

static const char *check_epoll_thread_wakes(void)
{
    int ep = epoll_create1(0);
    int p[2];
    pipe(p);
    int efd = eventfd(0, 0);
    add(ep, efd, EPOLLIN, 1);
    add(ep, p[0], EPOLLIN, 2);
    wake_fd = p[1];
    pthread_t t;
    long long start = now_ns();
    pthread_create(&t, NULL, write_later, "wake");
    struct epoll_event ev[2];
    int n = epoll_wait(ep, ev, 2, -1);
    long long ms = (now_ns() - start) / 1000000;
    pthread_join(t, NULL);
    if (n != 1 || ev[0].data.u64 != 2 || ms < 19)
        return BAD("%d events, first %llu, after %lld ms", n, (unsigned long long)ev[0].data.u64, ms);
    char buf[8];
    if (read(p[0], buf, sizeof buf) != 4)
        return BAD("read what woke it");
    close_pair(p);
    close(efd);
    close(ep);
    return NULL;
}

static const char *check_epoll_timerfd(void)
{
    int ep = epoll_create1(0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{0, 10 * 1000000L}, {0, 20 * 1000000L}};
    long long start = now_ns();
    timerfd_settime(tfd, 0, &its, NULL);
    add(ep, tfd, EPOLLIN | EPOLLET, 5);
    struct epoll_event ev[1];
    int n = epoll_wait(ep, ev, 1, -1);
    long long ms = (now_ns() - start) / 1000000;
    if (n != 1 || ev[0].data.u64 != 5 || ms < 19)
        return BAD("first expiration: %d events after %lld ms", n, ms);
    /* Edge-triggered: an unread timer does not fire again (Linux starts it again
     * when it is read), however many periods pass. */
    n = epoll_wait(ep, ev, 1, 25);
    if (n != 0)
        return BAD("unread, yet %d events", n);
    uint64_t ticks = 0;
    if (read(tfd, &ticks, 8) != 8 || ticks < 3)
        return BAD("ticks %llu", (unsigned long long)ticks);
    /* Read: the next expiration fires. */
    n = epoll_wait(ep, ev, 1, -1);
    ms = (now_ns() - start) / 1000000;
    if (n != 1 || ms < 49)
        return BAD("after the read: %d events after %lld ms", n, ms);
    close(tfd);
    close(ep);
    return NULL;
}

static const char *check_epoll_pwait_mask(void)
{
    int ep = epoll_create1(0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, old, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    handled = 0;
    raise(SIGUSR1);
    if (handled != 0)
        return BAD("a blocked signal was handled");
    sigemptyset(&during);
    struct epoll_event ev[1];
    errno = 0;
    int n = epoll_pwait(ep, ev, 1, -1, &during);
    int err = errno;
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    int still = sigismember(&now, SIGUSR1);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    close(ep);
    if (n != -1 || err != EINTR || handled != 1 || !still)
        return BAD("%d, errno %d, handled %d, blocked after %d", n, err, (int)handled, still);
    return NULL;
}

static const char *check_epoll_close(void)
{
    int ep = epoll_create1(0);
    int p[2];
    pipe(p);
    /* The item follows the open file, not the descriptor number. */
    int w2 = dup(p[1]);
    add(ep, p[1], EPOLLOUT, 9);
    close(p[1]);
    struct epoll_event ev[2];
    if (wait_now(ep, ev, 2) != 1 || ev[0].data.u64 != 9)
        return BAD("closing one of two descriptors removed the item");
    close(w2);
    if (wait_now(ep, ev, 2) != 0)
        return BAD("the last close left the item");
    /* Hang-up and error are reported without being asked for. */
    int q[2];
    pipe(q);
    add(ep, q[0], EPOLLIN, 1);
    add(ep, q[1], EPOLLOUT, 2);
    close(p[0]);
    close(q[1]);
    if (wait_now(ep, ev, 2) != 1 || ev[0].events != EPOLLHUP || ev[0].data.u64 != 1)
        return BAD("writer gone: %#x", ev[0].events);
    int r[2];
    pipe(r);
    add(ep, r[1], EPOLLOUT, 3);
    close(r[0]);
    close(q[0]);
    if (wait_now(ep, ev, 2) != 1 || ev[0].events != (EPOLLOUT | EPOLLERR) || ev[0].data.u64 != 3)
        return BAD("reader gone: %#x", ev[0].events);
    close(r[1]);
    close(ep);
    return NULL;
}

static const char *check_epoll_nested(void)
{
    int outer = epoll_create1(0), inner = epoll_create1(0);
    int p[2];
    pipe(p);
    add(inner, p[0], EPOLLIN, 1);
    if (add(outer, inner, EPOLLIN, 2) != 0)
        return BAD("nesting: errno %d", errno);
    struct epoll_event ev = {.events = EPOLLIN};
    EXPECT_ERR(epoll_ctl(inner, EPOLL_CTL_ADD, outer, &ev), ELOOP);
    if (poll_now(outer, POLLIN) != 0)
        return BAD("nothing written, yet readable");
    write(p[1], "n", 1);
    if (poll_now(outer, POLLIN) != POLLIN)
        return BAD("poll of the outer instance: %#x", poll_now(outer, POLLIN));
    struct epoll_event out[2];
    if (epoll_wait(outer, out, 2, -1) != 1 || out[0].data.u64 != 2)
        return BAD("outer wait");
    if (epoll_wait(inner, out, 2, 0) != 1 || out[0].data.u64 != 1)
        return BAD("inner wait");
    close_pair(p);
    close(inner);
    close(outer);
    return NULL;
}

static const char *check_epoll_fairness(void)
{
    int ep = epoll_create1(0);
    int e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = eventfd(1, 0);
        add(ep, e[i], EPOLLIN, i);
    }
    struct epoll_event ev[2];
    if (wait_now(ep, ev, 2) != 2)
        return BAD("first wait");
    int seen[3] = {0};
    seen[ev[0].data.u64]++;
    seen[ev[1].data.u64]++;
    if (wait_now(ep, ev, 2) != 2)
        return BAD("second wait");
    seen[ev[0].data.u64]++;
    seen[ev[1].data.u64]++;
    for (int i = 0; i < 3; i++) {
        close(e[i]);
        if (!seen[i])
            return BAD("item %d never reported in two waits of two", i);
    }
    close(ep);
    return NULL;
}

/* --- poll and select -------------------------------------------------------- */

static const char *check_poll_pipes(void)
{
    int p[2];
    pipe(p);
    int efd = eventfd(1, 0);
    struct pollfd fds[4] = {
        {p[0], POLLIN, 0}, {p[1], POLLOUT, 0}, {efd, POLLIN | POLLOUT, 0}, {-1, POLLIN, 0}};
    int n = poll(fds, 4, 0);
    if (n != 2 || fds[0].revents != 0 || fds[1].revents != POLLOUT ||
        fds[2].revents != (POLLIN | POLLOUT) || fds[3].revents != 0)
        return BAD("%d: %#x %#x %#x", n, fds[0].revents, fds[1].revents, fds[2].revents);
    long long start = now_ns();
    n = poll(fds, 1, 25);
    long long ms = (now_ns() - start) / 1000000;
    if (n != 0 || ms < 24)
        return BAD("25 ms poll: %d after %lld ms", n, ms);
    wake_fd = p[1];
    pthread_t t;
    pthread_create(&t, NULL, write_later, "x");
    n = poll(fds, 1, -1);
    pthread_join(t, NULL);
    if (n != 1 || fds[0].revents != POLLIN)
        return BAD("woken: %d, %#x", n, fds[0].revents);
    struct pollfd bad = {999, POLLIN, 0};
    if (poll(&bad, 1, 0) != 1 || bad.revents != POLLNVAL)
        return BAD("closed descriptor: %#x", bad.revents);
    close_pair(p);
    close(efd);
    return NULL;
}

static const char *check_ppoll_mask(void)
{
    int p[2];
    pipe(p);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t block, old, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, &old);
    handled = 0;
    raise(SIGUSR2);
    sigemptyset(&during);
    struct pollfd fd = {p[0], POLLIN, 0};
    errno = 0;
    int n = ppoll(&fd, 1, NULL, &during);
    int err = errno;
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    int still = sigismember(&now, SIGUSR2);
    /* With the signal blocked all along, a timeout ends the wait. */
    raise(SIGUSR2);
    struct timespec ts = {0, 10 * 1000000L};
    int m = ppoll(&fd, 1, &ts, &block);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR2, SIG_DFL);
    close_pair(p);
    if (n != -1 || err != EINTR || !still || m != 0 || handled != 2)
        return BAD("%d errno %d, blocked after %d, then %d, handled %d", n, err, still, m,
                   (int)handled);
    return NULL;
}

static const char *check_select(void)
{
    int p[2];
    pipe(p);
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(p[0], &r);
    FD_SET(p[1], &w);
    struct timeval tv = {0, 0};
    int n = select(p[1] + 1, &r, &w, NULL, &tv);
    if (n != 1 || FD_ISSET(p[0], &r) || !FD_ISSET(p[1], &w))
        return BAD("empty pipe: %d", n);
    write(p[1], "s", 1);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    FD_SET(p[1], &r);
    n = select(p[1] + 1, &r, NULL, NULL, NULL);
    if (n != 1 || !FD_ISSET(p[0], &r) || FD_ISSET(p[1], &r))
        return BAD("after a write: %d", n);
    char c;
    read(p[0], &c, 1);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv.tv_sec = 0;
    tv.tv_usec = 20000;
    long long start = now_ns();
    /* The raw call: Linux writes the time left back (musl's select does not pass
     * the caller's timeval). */
    n = (int)syscall(SYS_select, p[0] + 1, &r, NULL, NULL, &tv);
    long long ms = (now_ns() - start) / 1000000;
    if (n != 0 || FD_ISSET(p[0], &r) || ms < 19 || tv.tv_sec != 0 || tv.tv_usec > 1000)
        return BAD("20 ms select: %d after %lld ms, left %ld us", n, ms, (long)tv.tv_usec);
    FD_ZERO(&r);
    FD_SET(60, &r);
    errno = 0;
    if (select(61, &r, NULL, NULL, NULL) != -1 || errno != EBADF)
        return BAD("a closed descriptor: errno %d", errno);
    /* A sleep with nothing to watch. */
    tv.tv_sec = 0;
    tv.tv_usec = 15000;
    start = now_ns();
    n = select(0, NULL, NULL, NULL, &tv);
    ms = (now_ns() - start) / 1000000;
    if (n != 0 || ms < 14)
        return BAD("select as a sleep: %d after %lld ms", n, ms);
    /* pselect: the temporary mask lets a pending signal in. */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, old, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    handled = 0;
    raise(SIGUSR1);
    sigemptyset(&during);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    errno = 0;
    n = pselect(p[0] + 1, &r, NULL, NULL, NULL, &during);
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    close_pair(p);
    if (n != -1 || err != EINTR || handled != 1)
        return BAD("pselect: %d errno %d handled %d", n, err, (int)handled);
    return NULL;
}

/* The older forms of the calls, as the raw syscalls. */
static const char *check_legacy_syscalls(void)
{
#if defined(SYS_pipe) && defined(SYS_eventfd) && defined(SYS_epoll_create) && defined(SYS_epoll_wait) && defined(SYS_select)
    int p[2];
    if (syscall(SYS_pipe, p) != 0)
        return BAD("pipe: errno %d", errno);
    int efd = (int)syscall(SYS_eventfd, 4);
    uint64_t v = 0;
    if (efd < 0 || read(efd, &v, 8) != 8 || v != 4)
        return BAD("eventfd: %d, %llu", efd, (unsigned long long)v);
    int ep = (int)syscall(SYS_epoll_create, 8);
    add(ep, p[0], EPOLLIN, 4);
    write(p[1], "l", 1);
    struct epoll_event ev[1];
    if (syscall(SYS_epoll_wait, ep, ev, 1, -1) != 1 || ev[0].data.u64 != 4)
        return BAD("epoll_wait");
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    if (syscall(SYS_select, p[0] + 1, &r, NULL, NULL, NULL) != 1 || !FD_ISSET(p[0], &r))
        return BAD("select");
    close_pair(p);
    close(efd);
    close(ep);
#endif
    return NULL;
}

/* --- modes that end the app --------------------------------------------------- */

static int sigpipe_mode(void)
{
    int p[2];
    pipe(p);
    close(p[0]);
    printf("writing\n");
    fflush(stdout);
    write(p[1], "x", 1);
    printf("still running\n");
    return 0;
}

static int stuck_mode(void)
{
    int p[2];
    pipe(p);
    printf("reading\n");
    fflush(stdout);
    char c;
    read(p[0], &c, 1);
    printf("read returned\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "sigpipe") == 0)
        return sigpipe_mode();
    if (argc > 1 && strcmp(argv[1], "stuck") == 0)
        return stuck_mode();
    report("pipe_basics", check_pipe_basics());
    report("pipe2_flags", check_pipe2_flags());
    report("pipe_eof", check_pipe_eof());
    report("pipe_full", check_pipe_full());
    report("pipe_vectors", check_pipe_vectors());
    report("pipe_dup_close", check_pipe_dup_close());
    report("pipe_epipe", check_epipe());
    report("pipe_threads", check_pipe_threads());
    report("pipe_read_interrupted", check_pipe_read_interrupted());
    report("eventfd_counter", check_eventfd_counter());
    report("eventfd_semaphore", check_eventfd_semaphore());
    report("eventfd_threads", check_eventfd_threads());
    report("epoll_level", check_epoll_level());
    report("epoll_edge", check_epoll_edge());
    report("epoll_oneshot", check_epoll_oneshot());
    report("epoll_errors", check_epoll_errors());
    report("epoll_timeouts", check_epoll_timeouts());
    report("epoll_thread_wakes", check_epoll_thread_wakes());
    report("epoll_timerfd", check_epoll_timerfd());
    report("epoll_pwait_mask", check_epoll_pwait_mask());
    report("epoll_close", check_epoll_close());
    report("epoll_nested", check_epoll_nested());
    report("epoll_fairness", check_epoll_fairness());
    report("poll_pipes", check_poll_pipes());
    report("ppoll_mask", check_ppoll_mask());
    report("select", check_select());
    report("legacy_syscalls", check_legacy_syscalls());
    return failures ? 1 : 0;
}
