/* Asks /dev/sev-guest for an attestation report the way Linux code does
 * (SNP_GET_REPORT) and writes the raw report (0x4A0 bytes) to stdout.
 *
 *   sev_report TEXT   the report data is TEXT's bytes, zero-padded to 64
 *
 * On failure it prints errno and the ioctl's exitinfo2 to stderr and exits 1.
 * The structures are those of Linux include/uapi/linux/sev-guest.h (musl has no
 * kernel headers), with their sizes checked at compile time. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct snp_report_req {
    uint8_t user_data[64];
    uint32_t vmpl;
    uint8_t rsvd[28];
};

struct snp_report_resp {
    uint8_t data[4000];
};

struct snp_guest_request_ioctl {
    uint8_t msg_version;
    uint64_t req_data;
    uint64_t resp_data;
    uint64_t exitinfo2;
};

_Static_assert(sizeof(struct snp_report_req) == 96, "snp_report_req");
_Static_assert(sizeof(struct snp_guest_request_ioctl) == 32, "snp_guest_request_ioctl");

/* _IOWR('S', 0x0, struct snp_guest_request_ioctl) */
#define SNP_GET_REPORT 0xC0205300UL

/* struct snp_report_resp's data: status (u32), report_size (u32), 24 reserved
 * bytes, then the report (SEV-SNP firmware ABI, MSG_REPORT_RSP). */
#define REPORT_OFFSET 32
#define REPORT_SIZE 0x4A0

int main(int argc, char **argv) {
    static struct snp_report_req req;
    static struct snp_report_resp resp;
    struct snp_guest_request_ioctl io = {0};
    size_t n = argc > 1 ? strlen(argv[1]) : 0;
    if (n > sizeof(req.user_data)) {
        fprintf(stderr, "sev_report: report data longer than 64 bytes\n");
        return 2;
    }
    if (n > 0) {
        memcpy(req.user_data, argv[1], n);
    }
    int fd = open("/dev/sev-guest", O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "sev_report: open /dev/sev-guest: errno %d\n", errno);
        return 1;
    }
    io.msg_version = 1;
    io.req_data = (uint64_t)(uintptr_t)&req;
    io.resp_data = (uint64_t)(uintptr_t)&resp;
    if (ioctl(fd, SNP_GET_REPORT, &io) != 0) {
        fprintf(stderr, "sev_report: SNP_GET_REPORT: errno %d exitinfo2 %#llx\n", errno,
                (unsigned long long)io.exitinfo2);
        return 1;
    }
    uint32_t status, size;
    memcpy(&status, resp.data, 4);
    memcpy(&size, resp.data + 4, 4);
    if (status != 0 || size != REPORT_SIZE) {
        fprintf(stderr, "sev_report: status %u, report size %u\n", status, size);
        return 1;
    }
    if (write(1, resp.data + REPORT_OFFSET, REPORT_SIZE) != REPORT_SIZE) {
        fprintf(stderr, "sev_report: short write\n");
        return 1;
    }
    return 0;
}
