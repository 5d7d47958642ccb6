/*
 * TCP and UDP sockets over the loopback as a static Linux program uses them:
 * socket, bind, listen, accept and accept4, connect (blocking and non-blocking,
 * EINPROGRESS), getsockname and getpeername, the common options, send and recv
 * families and read/write/readv/writev on sockets, shutdown, EOF, poll and epoll over
 * sockets (level and edge triggered), a server thread and a client thread, IPv4 and
 * IPv6, a large transfer, and sendfile from files to a connection. Run natively and under nacre, it must print the same.
 *
 * The ports are PORT (TCP and UDP) and PORT+1 (TCP), from the first argument
 * (default 18080): under nacre the image must allow listening on them and connecting
 * to 127.0.0.1 and ::1 on them.
 *
 * Build: gcc -static -O2 -pthread sockets.c -o sockets (or musl-gcc)
 * Usage: sockets [PORT]          every check: "ok NAME" or "FAIL NAME: DETAIL" per
 *                                line; exit 0 when all passed
 *        sockets PORT denied P   connect to 127.0.0.1:P and bind P, printing the
 *                                errno names (ECONNREFUSED and EACCES under a
 *                                policy that does not allow P)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static int failures;
static char detail[256];
#define BAD(...) (snprintf(detail, sizeof detail, __VA_ARGS__), detail)
static int port;

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

static struct sockaddr_in v4(int p)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static struct sockaddr_in6 v6(int p)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(p)};
    a.sin6_addr = in6addr_loopback;
    return a;
}

static int listener(int p)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = v4(p);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
        close(s);
        return -1;
    }
    return s;
}

static int connected(int p)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4(p);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        close(s);
        return -1;
    }
    return s;
}

/* Read exactly n bytes (or fail). */
static int read_all(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

/* An echo server thread: accepts one connection, echoes until EOF. */
static void *echo_once(void *arg)
{
    int ls = *(int *)arg;
    int c = accept(ls, NULL, NULL);
    if (c < 0)
        return (void *)1;
    char buf[4096];
    for (;;) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r <= 0)
            break;
        if (write(c, buf, r) != r)
            break;
    }
    close(c);
    return NULL;
}

static void check_basics(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int type = 0, domain = 0, proto = 0;
    socklen_t l = sizeof type;
    getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &l);
    l = sizeof domain;
    getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &l);
    l = sizeof proto;
    getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
    report("socket-options-of-a-new-socket",
           type == SOCK_STREAM && domain == AF_INET && proto == IPPROTO_TCP
               ? NULL
               : BAD("type %d domain %d protocol %d", type, domain, proto));
    struct stat st;
    fstat(s, &st);
    report("fstat-says-socket", S_ISSOCK(st.st_mode) ? NULL : BAD("mode %o", st.st_mode));
    int one = 1, got = 0;
    l = sizeof got;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &got, &l);
    report("tcp-nodelay", got ? NULL : BAD("TCP_NODELAY reads %d", got));
    struct sockaddr_in a = v4(port);
    a.sin_family = AF_INET6;
    report("bind-wrong-family",
           bind(s, (struct sockaddr *)&a, sizeof a) < 0 && errno == EAFNOSUPPORT
               ? NULL
               : BAD("errno %d", errno));
    close(s);
    report("socket-unknown-family",
           socket(12345, SOCK_STREAM, 0) < 0 && errno == EAFNOSUPPORT ? NULL
                                                                       : BAD("errno %d", errno));
    report("socket-wrong-protocol",
           socket(AF_INET, SOCK_STREAM, IPPROTO_UDP) < 0 && errno == EPROTONOSUPPORT
               ? NULL
               : BAD("errno %d", errno));
    report("not-a-socket",
           listen(1, 1) < 0 && errno == ENOTSOCK ? NULL : BAD("errno %d", errno));
}

static void check_echo(void)
{
    int ls = listener(port);
    if (ls < 0) {
        report("tcp-listen", BAD("errno %d", errno));
        return;
    }
    struct sockaddr_in me;
    socklen_t l = sizeof me;
    getsockname(ls, (struct sockaddr *)&me, &l);
    report("getsockname-of-listener",
           l == sizeof me && me.sin_family == AF_INET && ntohs(me.sin_port) == port
               ? NULL
               : BAD("len %u port %d", l, ntohs(me.sin_port)));
    pthread_t t;
    pthread_create(&t, NULL, echo_once, &ls);
    int c = connected(port);
    if (c < 0) {
        report("tcp-connect", BAD("errno %d", errno));
        return;
    }
    struct sockaddr_in peer;
    l = sizeof peer;
    getpeername(c, (struct sockaddr *)&peer, &l);
    report("getpeername",
           ntohs(peer.sin_port) == port && peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK)
               ? NULL
               : BAD("port %d", ntohs(peer.sin_port)));
    const char *msg = "hello, sockets";
    char buf[64] = {0};
    ssize_t w = write(c, msg, strlen(msg));
    int ok = w == (ssize_t)strlen(msg) && read_all(c, buf, w) == 0 && !memcmp(buf, msg, w);
    report("tcp-echo-write-read", ok ? NULL : BAD("wrote %zd read %s", w, buf));
    struct iovec iov[2] = {{"abc", 3}, {"defg", 4}};
    w = writev(c, iov, 2);
    memset(buf, 0, sizeof buf);
    ok = w == 7 && read_all(c, buf, 7) == 0 && !memcmp(buf, "abcdefg", 7);
    report("tcp-echo-writev", ok ? NULL : BAD("wrote %zd got %s", w, buf));
    w = send(c, "xyz", 3, MSG_NOSIGNAL);
    memset(buf, 0, sizeof buf);
    ssize_t r = recv(c, buf, 3, MSG_WAITALL);
    report("tcp-echo-send-recv-waitall",
           w == 3 && r == 3 && !memcmp(buf, "xyz", 3) ? NULL : BAD("%zd %zd", w, r));
    /* A large transfer: 4 MiB through the echo server, checked byte for byte. */
    size_t big = 4 << 20;
    char *out = malloc(big), *in = malloc(big);
    for (size_t i = 0; i < big; i++)
        out[i] = (char)(i * 131 + (i >> 12));
    size_t sent = 0, got = 0;
    int flags = fcntl(c, F_GETFL);
    fcntl(c, F_SETFL, flags | O_NONBLOCK);
    while (got < big) {
        struct pollfd p = {c, POLLIN | (sent < big ? POLLOUT : 0), 0};
        if (poll(&p, 1, 10000) <= 0)
            break;
        if ((p.revents & POLLOUT) && sent < big) {
            ssize_t n = write(c, out + sent, big - sent);
            if (n > 0)
                sent += n;
            else if (errno != EAGAIN)
                break;
        }
        if (p.revents & POLLIN) {
            ssize_t n = read(c, in + got, big - got);
            if (n > 0)
                got += n;
            else if (n == 0 || errno != EAGAIN)
                break;
        }
    }
    fcntl(c, F_SETFL, flags);
    report("tcp-4mib-nonblocking-poll",
           got == big && !memcmp(in, out, big) ? NULL : BAD("sent %zu got %zu", sent, got));
    free(out);
    free(in);
    shutdown(c, SHUT_WR);
    r = read(c, buf, sizeof buf);
    report("shutdown-then-eof", r == 0 ? NULL : BAD("read %zd errno %d", r, errno));
    void *res;
    pthread_join(t, &res);
    report("server-thread", res == NULL ? NULL : "accept failed");
    close(c);
    close(ls);
}

static void check_nonblocking_connect_and_epoll(void)
{
    int ls = listener(port + 1);
    if (ls < 0) {
        report("epoll-listen", BAD("errno %d", errno));
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = v4(port + 1);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    int in_progress = r == 0 || errno == EINPROGRESS;
    struct pollfd p = {s, POLLOUT, 0};
    int n = poll(&p, 1, 5000);
    int err = -1;
    socklen_t l = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
    report("nonblocking-connect",
           in_progress && n == 1 && (p.revents & POLLOUT) && err == 0
               ? NULL
               : BAD("r %d n %d revents %x err %d", r, n, p.revents, err));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event out[4];
    n = epoll_wait(ep, out, 4, 5000);
    int c = n == 1 ? accept4(ls, NULL, NULL, SOCK_NONBLOCK) : -1;
    report("epoll-accept", c >= 0 ? NULL : BAD("n %d errno %d", n, errno));
    char buf[16];
    r = read(c, buf, sizeof buf);
    report("nonblocking-read-eagain", r < 0 && errno == EAGAIN ? NULL : BAD("%d %d", r, errno));
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    n = epoll_wait(ep, out, 4, 0);
    report("edge-nothing-yet", n == 0 ? NULL : BAD("n %d", n));
    write(s, "ping", 4);
    n = epoll_wait(ep, out, 4, 5000);
    report("edge-after-data",
           n == 1 && out[0].data.fd == c && (out[0].events & EPOLLIN) ? NULL : BAD("n %d", n));
    r = read(c, buf, sizeof buf);
    report("edge-read", r == 4 && !memcmp(buf, "ping", 4) ? NULL : BAD("%d", r));
    n = epoll_wait(ep, out, 4, 100);
    report("edge-no-repeat", n == 0 ? NULL : BAD("n %d", n));
    close(s);
    n = epoll_wait(ep, out, 4, 5000);
    r = n == 1 ? read(c, buf, sizeof buf) : -2;
    report("peer-close-is-eof", r == 0 ? NULL : BAD("n %d r %d", n, r));
    close(c);
    close(ep);
    close(ls);
}

static void check_udp(void)
{
    int srv = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = v4(port);
    if (bind(srv, (struct sockaddr *)&a, sizeof a)) {
        report("udp-bind", BAD("errno %d", errno));
        return;
    }
    int cli = socket(AF_INET, SOCK_DGRAM, 0);
    ssize_t w = sendto(cli, "datagram", 8, 0, (struct sockaddr *)&a, sizeof a);
    char buf[64] = {0};
    struct sockaddr_in from;
    socklen_t l = sizeof from;
    ssize_t r = recvfrom(srv, buf, sizeof buf, 0, (struct sockaddr *)&from, &l);
    report("udp-sendto-recvfrom",
           w == 8 && r == 8 && !memcmp(buf, "datagram", 8) && from.sin_family == AF_INET &&
                   from.sin_addr.s_addr == htonl(INADDR_LOOPBACK)
               ? NULL
               : BAD("w %zd r %zd", w, r));
    /* A datagram longer than the buffer: cut, with MSG_TRUNC saying its length. */
    sendto(cli, "0123456789", 10, 0, (struct sockaddr *)&a, sizeof a);
    r = recv(srv, buf, 4, MSG_TRUNC);
    report("udp-truncated", r == 10 && !memcmp(buf, "0123", 4) ? NULL : BAD("r %zd", r));
    struct msghdr m = {0};
    struct iovec iov[2] = {{buf, 3}, {buf + 3, 3}};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    m.msg_name = &from;
    m.msg_namelen = sizeof from;
    sendto(cli, "abcdef", 6, 0, (struct sockaddr *)&a, sizeof a);
    r = recvmsg(srv, &m, 0);
    report("udp-recvmsg", r == 6 && !memcmp(buf, "abcdef", 6) && m.msg_namelen == sizeof from
                              ? NULL
                              : BAD("r %zd namelen %u", r, m.msg_namelen));
    /* Several datagrams per call: three sent with sendmmsg, received with recvmmsg
     * (MSG_WAITFORONE: the first waits, then what is there). */
    struct mmsghdr out[3], in[4];
    struct iovec oiov[3], iiov[4];
    char ibuf[4][16];
    const char *words[3] = {"one", "three", "seventeen"};
    memset(out, 0, sizeof out);
    memset(in, 0, sizeof in);
    for (int i = 0; i < 3; i++) {
        oiov[i] = (struct iovec){(void *)words[i], strlen(words[i])};
        out[i].msg_hdr.msg_iov = &oiov[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &a;
        out[i].msg_hdr.msg_namelen = sizeof a;
    }
    for (int i = 0; i < 4; i++) {
        iiov[i] = (struct iovec){ibuf[i], sizeof ibuf[i]};
        in[i].msg_hdr.msg_iov = &iiov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(cli, out, 3, 0);
    int got = recvmmsg(srv, in, 4, MSG_WAITFORONE, NULL);
    const char *fail = NULL;
    if (sent != 3 || out[2].msg_len != 9)
        fail = BAD("sendmmsg %d (errno %d), last %u bytes", sent, errno, out[2].msg_len);
    else if (got != 3)
        fail = BAD("recvmmsg %d (errno %d)", got, errno);
    for (int i = 0; i < 3 && !fail; i++)
        if (in[i].msg_len != strlen(words[i]) || memcmp(ibuf[i], words[i], in[i].msg_len))
            fail = BAD("message %d: %u bytes", i, in[i].msg_len);
    report("udp-sendmmsg-recvmmsg", fail);
    close(cli);
    close(srv);
}

static void check_ipv6(void)
{
    int ls = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 a = v6(port);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4)) {
        report("ipv6-listen", BAD("errno %d", errno));
        close(ls);
        return;
    }
    pthread_t t;
    pthread_create(&t, NULL, echo_once, &ls);
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    char buf[8] = {0};
    int ok = r == 0 && write(c, "six", 3) == 3 && read_all(c, buf, 3) == 0;
    struct sockaddr_in6 peer;
    socklen_t l = sizeof peer;
    getpeername(c, (struct sockaddr *)&peer, &l);
    report("ipv6-echo",
           ok && !memcmp(buf, "six", 3) && l == sizeof peer &&
                   !memcmp(&peer.sin6_addr, &in6addr_loopback, 16)
               ? NULL
               : BAD("r %d errno %d", r, errno));
    close(c);
    pthread_join(t, NULL);
    close(ls);
}

/* A receiver thread: accepts one connection and reads it to EOF into `got`. */
struct sink {
    int ls;
    char *got;
    size_t cap, len;
};

static void *sink_all(void *arg)
{
    struct sink *k = arg;
    int c = accept(k->ls, NULL, NULL);
    if (c < 0)
        return (void *)1;
    for (;;) {
        ssize_t r = read(c, k->got + k->len, k->cap - k->len);
        if (r <= 0)
            break;
        k->len += r;
    }
    close(c);
    return NULL;
}

/* Send `len` bytes of `fd` from `*off` (or from its offset when `off` is NULL). */
static int sendfile_all(int s, int fd, off_t *off, size_t len)
{
    while (len > 0) {
        ssize_t w = sendfile(s, fd, off, len);
        if (w <= 0)
            return -1;
        len -= w;
    }
    return 0;
}

/* sendfile from a file the app wrote (at an offset, then from the file's own offset)
 * and from a packaged one, to a TCP connection: the receiver gets the file's bytes. */
static void check_sendfile(void)
{
    enum { SIZE = 300 * 1024, HEAD = 1000 };
    static char data[SIZE], got[SIZE + 8192];
    for (int i = 0; i < SIZE; i++)
        data[i] = (char)(i * 7 + i / 4096);
    char path[64];
    snprintf(path, sizeof path, "/tmp/nacre-sendfile-%d", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    const char *fail = NULL;
    if (fd < 0 || write(fd, data, SIZE) != SIZE || lseek(fd, 0, SEEK_SET) != 0)
        fail = BAD("writing %s: %s", path, strerror(errno));
    for (int round = 0; round < 2 && !fail; round++) {
        struct sink k = {.ls = listener(port + 1), .got = got, .cap = sizeof got};
        pthread_t t;
        if (k.ls < 0 || pthread_create(&t, NULL, sink_all, &k)) {
            fail = BAD("listener: %s", strerror(errno));
            break;
        }
        int s = connected(port + 1);
        const char *want = data;
        size_t want_len = SIZE;
        char hosts[8192];
        if (s < 0) {
            fail = BAD("connect: %s", strerror(errno));
        } else if (round == 0) {
            off_t off = HEAD;
            if (sendfile_all(s, fd, &off, SIZE - HEAD) || off != SIZE)
                fail = BAD("from offset %d: %s, offset now %ld", HEAD, strerror(errno), (long)off);
            else if (lseek(fd, 0, SEEK_CUR) != 0)
                fail = BAD("an explicit offset moved the file's");
            else if (sendfile_all(s, fd, NULL, HEAD) || lseek(fd, 0, SEEK_CUR) != HEAD)
                fail = BAD("from the file's offset: %s", strerror(errno));
        } else {
            int h = open("/etc/hosts", O_RDONLY);
            ssize_t n = h < 0 ? -1 : read(h, hosts, sizeof hosts);
            if (n <= 0 || lseek(h, 0, SEEK_SET) != 0 || sendfile_all(s, h, NULL, n))
                fail = BAD("/etc/hosts: %s", strerror(errno));
            want = hosts;
            want_len = n > 0 ? (size_t)n : 0;
            if (h >= 0)
                close(h);
        }
        if (s >= 0)
            close(s);
        pthread_join(t, NULL);
        close(k.ls);
        if (fail)
            break;
        if (round == 0) {
            /* The tail from HEAD, then the head. */
            if (k.len != SIZE || memcmp(got, data + HEAD, SIZE - HEAD) ||
                memcmp(got + SIZE - HEAD, data, HEAD))
                fail = BAD("received %zu bytes, not the file's %d in order", k.len, SIZE);
        } else if (k.len != want_len || memcmp(got, want, want_len)) {
            fail = BAD("received %zu bytes of /etc/hosts, not its %zu", k.len, want_len);
        }
        report(round == 0 ? "sendfile-written-file" : "sendfile-packaged-file", fail);
        fail = NULL;
    }
    if (fail)
        report("sendfile", fail);
    if (fd >= 0)
        close(fd);
    unlink(path);
}

static const char *errno_name(int e)
{
    switch (e) {
    case 0: return "0";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EACCES: return "EACCES";
    case EADDRINUSE: return "EADDRINUSE";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    port = argc > 1 ? atoi(argv[1]) : 18080;
    if (argc > 3 && !strcmp(argv[2], "denied")) {
        int p = atoi(argv[3]);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = v4(p);
        int r = connect(s, (struct sockaddr *)&a, sizeof a);
        printf("connect %s\n", errno_name(r ? errno : 0));
        close(s);
        s = socket(AF_INET, SOCK_STREAM, 0);
        r = bind(s, (struct sockaddr *)&a, sizeof a);
        printf("bind %s\n", errno_name(r ? errno : 0));
        return 0;
    }
    check_basics();
    check_echo();
    check_nonblocking_connect_and_epoll();
    check_udp();
    check_ipv6();
    check_sendfile();
    return failures ? 1 : 0;
}
