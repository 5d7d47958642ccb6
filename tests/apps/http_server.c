/*
 * A small HTTP/1.x server on one epoll loop, as C services are written: non-blocking
 * sockets, level-triggered epoll, keep-alive, many connections at once.
 *
 * GET /quit answers and ends the server (exit 0) after printing how many requests it
 * served; GET /PATH answers "hello PATH\n"; GET /big/N answers N bytes of a pattern
 * ('a' + i % 26). A request asking for keep-alive (HTTP/1.1 without "Connection:
 * close", or HTTP/1.0 with "Connection: Keep-Alive") keeps its connection.
 *
 * Build: gcc -static -O2 http_server.c -o http_server (or musl-gcc)
 * Usage: http_server PORT    prints "listening" once it accepts connections
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define IN_SIZE 8192

struct conn {
    char in[IN_SIZE];
    size_t in_len;
    char *out;
    size_t out_len, out_done;
    int close_after;
};

static struct conn *conns[MAX_CONNS];
static long served;
static int quitting;

static void drop(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (fd < MAX_CONNS && conns[fd]) {
        free(conns[fd]->out);
        free(conns[fd]);
        conns[fd] = NULL;
    }
}

/* Whether `hay` (a request head) holds the header value `what`, case-insensitively. */
static int mentions(const char *hay, const char *what)
{
    size_t n = strlen(what);
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, what, n))
            return 1;
    return 0;
}

/* Queue the answer to the request head in c->in[0..head). */
static void answer(struct conn *c, size_t head)
{
    char path[256] = "";
    char version[16] = "";
    c->in[head - 1] = '\0';
    sscanf(c->in, "GET /%255s %15s", path, version);
    if (!strcmp(path, "HTTP/1.0") || !strcmp(path, "HTTP/1.1")) {
        /* "GET / HTTP/1.x": the path is empty. */
        strcpy(version, path);
        path[0] = '\0';
    }
    int keep = !strcmp(version, "HTTP/1.1") ? !mentions(c->in, "connection: close")
                                             : mentions(c->in, "keep-alive");
    char *body;
    size_t body_len;
    if (!strncmp(path, "big/", 4)) {
        body_len = strtoul(path + 4, NULL, 10);
        if (body_len > (64 << 20))
            body_len = 64 << 20;
        body = malloc(body_len ? body_len : 1);
        for (size_t i = 0; i < body_len; i++)
            body[i] = 'a' + i % 26;
    } else {
        body = malloc(300);
        body_len = snprintf(body, 300, "hello %s\n", path);
    }
    if (!strcmp(path, "quit")) {
        quitting = 1;
        keep = 0;
    }
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                      "Connection: %s\r\n\r\n",
                      body_len, keep ? "keep-alive" : "close");
    char *out = realloc(c->out, c->out_len - c->out_done + hl + body_len);
    memmove(out, out + c->out_done, c->out_len - c->out_done);
    c->out_len -= c->out_done;
    c->out_done = 0;
    memcpy(out + c->out_len, hdr, hl);
    memcpy(out + c->out_len + hl, body, body_len);
    c->out_len += hl + body_len;
    c->out = out;
    free(body);
    c->close_after = !keep;
    served++;
}

/* Write what is queued; 0 when the connection is done with. */
static int flush(int fd, struct conn *c)
{
    while (c->out_done < c->out_len) {
        ssize_t w = write(fd, c->out + c->out_done, c->out_len - c->out_done);
        if (w < 0)
            return errno == EAGAIN ? 1 : 0;
        c->out_done += w;
    }
    return !c->close_after;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 18180;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 512)) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening\n");
    fflush(stdout);
    struct epoll_event events[256];
    while (!quitting) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    if (c >= MAX_CONNS) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c] = calloc(1, sizeof(struct conn));
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c)
                continue;
            int alive = 1;
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(fd, c->in + c->in_len, IN_SIZE - 1 - c->in_len);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    alive = 0;
                } else if (r > 0) {
                    c->in_len += r;
                    c->in[c->in_len] = '\0';
                    char *end;
                    while ((end = strstr(c->in, "\r\n\r\n"))) {
                        size_t head = end - c->in + 4;
                        answer(c, head);
                        memmove(c->in, c->in + head, c->in_len - head);
                        c->in_len -= head;
                        c->in[c->in_len] = '\0';
                    }
                    if (c->in_len >= IN_SIZE - 1)
                        alive = 0;
                }
            }
            if (alive && (events[i].events & EPOLLOUT || c->out_len > c->out_done))
                alive = flush(fd, c);
            if (!alive) {
                drop(ep, fd);
                continue;
            }
            struct epoll_event cev = {
                .events = EPOLLIN | EPOLLRDHUP | (c->out_done < c->out_len ? EPOLLOUT : 0),
                .data.fd = fd,
            };
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
        }
    }
    printf("served %ld\n", served);
    return 0;
}
