/*
 * The app of the hostile-host scenarios (tests/tests/hostile.rs): each mode does the
 * few things a scenario needs the host to answer, and says on stdout what it got, so
 * that a test can tell a lie the firmware caught from one that reached the app.
 *
 *   hostile              one line on stdout, exit 42 (as hello.c)
 *   hostile poll         poll(2) stdin for input, then echo what read(2) returns
 *   hostile clock        CLOCK_MONOTONIC and CLOCK_REALTIME around sleeps, through the
 *                        vDSO and through syscall(2): "clock ok, realtime S" (the last
 *                        CLOCK_REALTIME in seconds) if they never go back
 *   hostile report N     N SNP_GET_REPORT ioctls on /dev/sev-guest, one line each:
 *                        "report I: ok DATA" (the report's REPORT_DATA as text) or
 *                        "report I: errno E"
 *
 * Build: gcc -static -O2 hostile.c -o hostile
 * Exit code: 42 for the plain mode, else 0, or 1 with a message on stderr when a
 * step fails in a way the mode does not report on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int echo_after_poll(void)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int n = poll(&p, 1, 5000);
    if (n < 0) {
        printf("poll: errno %d\n", errno);
        return 0;
    }
    printf("poll: %d ready, revents %#x\n", n, (unsigned)p.revents);
    char buf[256];
    ssize_t got = read(0, buf, sizeof buf);
    if (got < 0) {
        printf("read: errno %d\n", errno);
        return 0;
    }
    printf("read: %.*s", (int)got, buf);
    return 0;
}

static int64_t ns_of(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* The clock `id` read through the vDSO (libc) and through the syscall itself. */
static void read_clock(clockid_t id, int64_t out[2])
{
    struct timespec t;
    clock_gettime(id, &t);
    out[0] = ns_of(&t);
    syscall(SYS_clock_gettime, id, &t);
    out[1] = ns_of(&t);
}

static int clocks_never_go_back(void)
{
    clockid_t ids[2] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    int64_t last[2] = {0, 0};
    for (int round = 0; round < 20; round++) {
        for (int c = 0; c < 2; c++) {
            int64_t now[2];
            read_clock(ids[c], now);
            for (int way = 0; way < 2; way++) {
                if (now[way] < last[c]) {
                    printf("clock %d went back by %lld ns in round %d\n", c,
                           (long long)(last[c] - now[way]), round);
                    return 0;
                }
                last[c] = now[way];
            }
        }
        struct timespec nap = {.tv_sec = 0, .tv_nsec = 2000000};
        nanosleep(&nap, NULL);
    }
    printf("clock ok, realtime %lld\n", (long long)(last[1] / 1000000000));
    return 0;
}

/* Linux include/uapi/linux/sev-guest.h, as sev_report.c has them. */
struct snp_report_req {
    uint8_t user_data[64];
    uint32_t vmpl;
    uint8_t rsvd[28];
};

struct snp_guest_request_ioctl {
    uint8_t msg_version;
    uint64_t req_data;
    uint64_t resp_data;
    uint64_t exitinfo2;
};

#define SNP_GET_REPORT 0xC0205300UL
/* MSG_REPORT_RSP: status, report_size, 24 reserved bytes, then the report, whose
 * REPORT_DATA is at 0x50. */
#define REPORT_DATA_AT (32 + 0x50)

static int reports(int count)
{
    int fd = open("/dev/sev-guest", O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "hostile: open /dev/sev-guest: errno %d\n", errno);
        return 1;
    }
    for (int i = 1; i <= count; i++) {
        static struct snp_report_req req;
        static uint8_t resp[4000];
        struct snp_guest_request_ioctl io = {.msg_version = 1};
        memset(&req, 0, sizeof req);
        snprintf((char *)req.user_data, sizeof req.user_data, "request %d", i);
        io.req_data = (uint64_t)(uintptr_t)&req;
        io.resp_data = (uint64_t)(uintptr_t)resp;
        if (ioctl(fd, SNP_GET_REPORT, &io) != 0) {
            printf("report %d: errno %d\n", i, errno);
            continue;
        }
        printf("report %d: ok %.64s\n", i, (const char *)resp + REPORT_DATA_AT);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int status;
    if (strcmp(mode, "poll") == 0) {
        status = echo_after_poll();
    } else if (strcmp(mode, "clock") == 0) {
        status = clocks_never_go_back();
    } else if (strcmp(mode, "report") == 0) {
        status = reports(argc > 2 ? atoi(argv[2]) : 1);
    } else {
        printf("hello from the hostile suite\n");
        status = 42;
    }
    fflush(stdout);
    return status;
}
