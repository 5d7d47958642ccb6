/* Asks /dev/tdx_guest for a TDREPORT the way Linux code does (TDX_CMD_GET_REPORT0)
 * and writes the raw TDREPORT_STRUCT (1024 bytes) to stdout.
 *
 *   tdx_report TEXT   the report data is TEXT's bytes, zero-padded to 64
 *
 * On failure it prints errno to stderr and exits 1. The structure is Linux
 * include/uapi/linux/tdx-guest.h's (musl has no kernel headers), its size checked at
 * compile time. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct tdx_report_req {
    uint8_t reportdata[64];
    uint8_t tdreport[1024];
};

_Static_assert(sizeof(struct tdx_report_req) == 1088, "tdx_report_req");

/* _IOWR('T', 1, struct tdx_report_req) */
#define TDX_CMD_GET_REPORT0 0xC4405401UL

int main(int argc, char **argv) {
    static struct tdx_report_req req;
    size_t n = argc > 1 ? strlen(argv[1]) : 0;
    if (n > sizeof(req.reportdata)) {
        fprintf(stderr, "tdx_report: report data longer than 64 bytes\n");
        return 2;
    }
    if (n > 0) {
        memcpy(req.reportdata, argv[1], n);
    }
    int fd = open("/dev/tdx_guest", O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "tdx_report: open /dev/tdx_guest: errno %d\n", errno);
        return 1;
    }
    if (ioctl(fd, TDX_CMD_GET_REPORT0, &req) != 0) {
        fprintf(stderr, "tdx_report: TDX_CMD_GET_REPORT0: errno %d\n", errno);
        return 1;
    }
    if (write(1, req.tdreport, sizeof(req.tdreport)) != (ssize_t)sizeof(req.tdreport)) {
        fprintf(stderr, "tdx_report: short write\n");
        return 1;
    }
    return 0;
}
