/*
 * A restartable sequence preempted in its critical section is aborted: the thread
 * registers its own rseq area, then spins inside a critical section long enough to
 * outlast a time slice while another thread also wants the CPU. On one CPU (or under
 * nacre, whose threads share one vCPU) the section cannot finish uninterrupted, so the
 * kernel sends the thread to the abort handler. Prints "aborted N" with how many of
 * ten attempts were aborted, or "completed" when none was (natively, with a CPU per
 * thread, that is what happens).
 *
 * Build: gcc -static -O2 rseq_abort.c -o rseq_abort
 * Run with GLIBC_TUNABLES=glibc.pthread.rseq=0 so that glibc does not register its
 * own area first.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RSEQ_SIG 0x53053053

struct rseq_area {
    uint32_t cpu_id_start;
    uint32_t cpu_id;
    uint64_t rseq_cs;
    uint32_t flags;
    uint32_t node_id;
    uint32_t mm_cid;
    uint32_t pad;
} __attribute__((aligned(32)));

static __thread struct rseq_area area;
static atomic_int stop;

/* The critical section: the descriptor (struct rseq_cs: version, flags, start_ip,
 * post_commit_offset, abort_ip) and the code, in assembly so that the addresses
 * are exact. Returns 0 when the loop ran to the end, 1 when aborted. */
__asm__(".pushsection .data\n"
        ".balign 32\n"
        "cs_desc:\n"
        ".long 0, 0\n"
        ".quad cs_start, cs_post_commit - cs_start, cs_abort\n"
        ".popsection\n"
        ".text\n"
        ".globl run_section\n"
        "run_section:\n"
        "lea cs_desc(%rip), %rax\n"
        "mov %rax, 8(%rdi)\n"
        "mov %rsi, %rcx\n"
        "cs_start:\n"
        "1: dec %rcx\n"
        "jnz 1b\n"
        "cs_post_commit:\n"
        "xor %eax, %eax\n"
        "ret\n"
        ".long 0x53053053\n"
        "cs_abort:\n"
        "mov $1, %eax\n"
        "ret\n");
int run_section(struct rseq_area *rs, uint64_t spins);

static void *contender(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop))
        ;
    return NULL;
}

int main(void)
{
    if (syscall(SYS_rseq, &area, sizeof area, 0, RSEQ_SIG) != 0) {
        perror("rseq");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, contender, NULL);
    int aborted = 0, stale = 0;
    for (int i = 0; i < 10; i++) {
        aborted += run_section(&area, 60000000);
        /* The kernel clears the descriptor when it aborts a section. */
        stale += area.rseq_cs != 0 && aborted;
        area.rseq_cs = 0;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    if (stale)
        printf("descriptor left set after an abort\n");
    if (aborted)
        printf("aborted %d\n", aborted > 0);
    else
        printf("completed\n");
    return 0;
}
