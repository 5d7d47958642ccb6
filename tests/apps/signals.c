/*
 * Signals as a static Linux program sees them: handlers with siginfo and the
 * ucontext, the frame's saved registers and FPU state, rt_sigreturn, the
 * alternate stack, masks, pending signals, restarted and interrupted calls,
 * and the default actions. Run natively and under nacre, it must print the same.
 *
 * Build: gcc -static -O2 signals.c -o signals (or musl-gcc)
 * Usage:
 *   signals checks        run every check: "ok NAME" or "FAIL NAME: DETAIL" per
 *                         line; exit 0 when all passed
 *   signals abort         print a line, then abort(): killed by SIGABRT (134)
 *   signals abort-handler the same with a SIGABRT handler that returns
 *   signals segv          dereference an unmapped address with no handler (139)
 *   signals bad-altstack  deliver SIGUSR1 on an alternate stack that is not
 *                         writable: killed by SIGSEGV (139)
 *   signals bad-altstack-caught  the same with a SIGSEGV handler on the normal
 *                         stack, which prints a line and exits 3
 *   signals bad-sigreturn rt_sigreturn with a frame on an unmapped stack (139)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static int failures;

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

static char detail[256];
/* glibc declares raise, kill, syscall and sigprocmask as leaf functions, which the
 * compiler may assume never run this file's code: after a call that delivers a
 * signal, what the handler wrote must be read again. */
#define BARRIER() __asm__ volatile("" ::: "memory")
#define BAD(...) (snprintf(detail, sizeof detail, __VA_ARGS__), detail)

/* ---------------------------------------------------------------------------
 * Probes in assembly: known values in every register, then a ud2 whose SIGILL
 * handler checks them in the frame, changes some, and returns. */

#define PATTERN(n) (0x0101010101010101ULL * (n))
/* futex(2) (<linux/futex.h>, which musl's headers lack). */
#define FUTEX_WAIT_PRIVATE (0 | 128)

__asm__(
    ".text\n"
    ".globl ud2_probe\n"
    "ud2_probe:\n"
    ".globl ud2_probe_insn\n"
    "ud2_probe_insn:\n"
    "    ud2\n"
    "    ret\n"

    /* regs_probe(uint64_t out[17]): rax rbx rcx rdx rsi rdi rbp r8..r15 rflags rsp */
    ".globl regs_probe\n"
    "regs_probe:\n"
    "    push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "    push %rdi\n"
    "    movabs $0x0101010101010101, %rax\n"
    "    movabs $0x0202020202020202, %rbx\n"
    "    movabs $0x0303030303030303, %rcx\n"
    "    movabs $0x0404040404040404, %rdx\n"
    "    movabs $0x0505050505050505, %rsi\n"
    "    movabs $0x0606060606060606, %rdi\n"
    "    movabs $0x0707070707070707, %rbp\n"
    "    movabs $0x0808080808080808, %r8\n"
    "    movabs $0x0909090909090909, %r9\n"
    "    movabs $0x0a0a0a0a0a0a0a0a, %r10\n"
    "    movabs $0x0b0b0b0b0b0b0b0b, %r11\n"
    "    movabs $0x0c0c0c0c0c0c0c0c, %r12\n"
    "    movabs $0x0d0d0d0d0d0d0d0d, %r13\n"
    "    movabs $0x0e0e0e0e0e0e0e0e, %r14\n"
    "    movabs $0x0f0f0f0f0f0f0f0f, %r15\n"
    "    std\n"
    ".globl regs_probe_insn\n"
    "regs_probe_insn:\n"
    "    ud2\n"
    "    pushfq\n"
    "    cld\n"
    "    xchg %rdi, 8(%rsp)\n"
    "    mov %rax, 0(%rdi)\n mov %rbx, 8(%rdi)\n mov %rcx, 16(%rdi)\n"
    "    mov %rdx, 24(%rdi)\n mov %rsi, 32(%rdi)\n"
    "    mov 8(%rsp), %rax\n mov %rax, 40(%rdi)\n"
    "    mov %rbp, 48(%rdi)\n mov %r8, 56(%rdi)\n mov %r9, 64(%rdi)\n"
    "    mov %r10, 72(%rdi)\n mov %r11, 80(%rdi)\n mov %r12, 88(%rdi)\n"
    "    mov %r13, 96(%rdi)\n mov %r14, 104(%rdi)\n mov %r15, 112(%rdi)\n"
    "    mov 0(%rsp), %rax\n mov %rax, 120(%rdi)\n"
    "    lea 16(%rsp), %rax\n mov %rax, 128(%rdi)\n"
    "    add $16, %rsp\n"
    "    pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
    "    ret\n"

    /* sse_probe(const uint8_t in[256], uint8_t out[256], uint32_t *mxcsr) */
    ".globl sse_probe\n"
    "sse_probe:\n"
    "    sub $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    movdqu 0(%rdi), %xmm0\n movdqu 16(%rdi), %xmm1\n movdqu 32(%rdi), %xmm2\n"
    "    movdqu 48(%rdi), %xmm3\n movdqu 64(%rdi), %xmm4\n movdqu 80(%rdi), %xmm5\n"
    "    movdqu 96(%rdi), %xmm6\n movdqu 112(%rdi), %xmm7\n movdqu 128(%rdi), %xmm8\n"
    "    movdqu 144(%rdi), %xmm9\n movdqu 160(%rdi), %xmm10\n movdqu 176(%rdi), %xmm11\n"
    "    movdqu 192(%rdi), %xmm12\n movdqu 208(%rdi), %xmm13\n movdqu 224(%rdi), %xmm14\n"
    "    movdqu 240(%rdi), %xmm15\n"
    "    movl $0x7f80, 4(%rsp)\n"
    "    ldmxcsr 4(%rsp)\n"
    ".globl sse_probe_insn\n"
    "sse_probe_insn:\n"
    "    ud2\n"
    "    stmxcsr (%rdx)\n"
    "    ldmxcsr (%rsp)\n"
    "    movdqu %xmm0, 0(%rsi)\n movdqu %xmm1, 16(%rsi)\n movdqu %xmm2, 32(%rsi)\n"
    "    movdqu %xmm3, 48(%rsi)\n movdqu %xmm4, 64(%rsi)\n movdqu %xmm5, 80(%rsi)\n"
    "    movdqu %xmm6, 96(%rsi)\n movdqu %xmm7, 112(%rsi)\n movdqu %xmm8, 128(%rsi)\n"
    "    movdqu %xmm9, 144(%rsi)\n movdqu %xmm10, 160(%rsi)\n movdqu %xmm11, 176(%rsi)\n"
    "    movdqu %xmm12, 192(%rsi)\n movdqu %xmm13, 208(%rsi)\n movdqu %xmm14, 224(%rsi)\n"
    "    movdqu %xmm15, 240(%rsi)\n"
    "    add $8, %rsp\n"
    "    ret\n"

    /* avx_probe(const uint8_t in[512], uint8_t out[512]) */
    ".globl avx_probe\n"
    "avx_probe:\n"
    "    vmovdqu 0(%rdi), %ymm0\n vmovdqu 32(%rdi), %ymm1\n vmovdqu 64(%rdi), %ymm2\n"
    "    vmovdqu 96(%rdi), %ymm3\n vmovdqu 128(%rdi), %ymm4\n vmovdqu 160(%rdi), %ymm5\n"
    "    vmovdqu 192(%rdi), %ymm6\n vmovdqu 224(%rdi), %ymm7\n vmovdqu 256(%rdi), %ymm8\n"
    "    vmovdqu 288(%rdi), %ymm9\n vmovdqu 320(%rdi), %ymm10\n vmovdqu 352(%rdi), %ymm11\n"
    "    vmovdqu 384(%rdi), %ymm12\n vmovdqu 416(%rdi), %ymm13\n vmovdqu 448(%rdi), %ymm14\n"
    "    vmovdqu 480(%rdi), %ymm15\n"
    ".globl avx_probe_insn\n"
    "avx_probe_insn:\n"
    "    ud2\n"
    "    vmovdqu %ymm0, 0(%rsi)\n vmovdqu %ymm1, 32(%rsi)\n vmovdqu %ymm2, 64(%rsi)\n"
    "    vmovdqu %ymm3, 96(%rsi)\n vmovdqu %ymm4, 128(%rsi)\n vmovdqu %ymm5, 160(%rsi)\n"
    "    vmovdqu %ymm6, 192(%rsi)\n vmovdqu %ymm7, 224(%rsi)\n vmovdqu %ymm8, 256(%rsi)\n"
    "    vmovdqu %ymm9, 288(%rsi)\n vmovdqu %ymm10, 320(%rsi)\n vmovdqu %ymm11, 352(%rsi)\n"
    "    vmovdqu %ymm12, 384(%rsi)\n vmovdqu %ymm13, 416(%rsi)\n vmovdqu %ymm14, 448(%rsi)\n"
    "    vmovdqu %ymm15, 480(%rsi)\n"
    "    vzeroupper\n"
    "    ret\n");

void ud2_probe(void);
extern const char ud2_probe_insn[];
void regs_probe(uint64_t *out);
extern const char regs_probe_insn[];
void sse_probe(const uint8_t *in, uint8_t *out, uint32_t *mxcsr);
extern const char sse_probe_insn[];
void avx_probe(const uint8_t *in, uint8_t *out);
extern const char avx_probe_insn[];

static uint64_t read_flags(void)
{
    uint64_t f;
    __asm__ volatile("pushfq\n pop %0" : "=r"(f));
    return f;
}

static uint32_t read_mxcsr(void)
{
    uint32_t m;
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    return m;
}

/* What the SIGILL handler does, and what it saw. */
enum ill_mode { ILL_RECORD, ILL_SKIP, ILL_REGS, ILL_SSE, ILL_AVX, ILL_BAD_CS, ILL_BAD_RIP };
static volatile int ill_mode;
static volatile int ill_count;
static siginfo_t ill_info;
static char ill_problem[256];
static uint8_t fpu_pattern[512];
static int have_avx;

#define ILL_BAD(...) snprintf(ill_problem, sizeof ill_problem, __VA_ARGS__)

/* Offsets of the FPU state Linux describes in <asm/sigcontext.h>. */
#define FPX_SW_OFFSET 464
#define XSTATE_MAGIC1 0x46505853U
#define XSTATE_MAGIC2 0x46505845U
#define UC_FP_XSTATE 0x1

/* The FXSAVE region the frame's fpregs points at (Intel SDM vol. 1, 10.5.1; glibc
 * and musl name its type differently). */
struct fxregs {
    uint16_t cwd, swd, ftw, fop;
    uint64_t rip, rdp;
    uint32_t mxcsr, mxcsr_mask;
    uint8_t st[128];
    uint8_t xmm[16][16];
    uint8_t reserved[96];
};

static void check_frame_fpu(ucontext_t *uc, uint32_t want_mxcsr, int stride)
{
    const struct fxregs *fp = (const struct fxregs *)uc->uc_mcontext.fpregs;
    if (!fp) {
        ILL_BAD("no FPU state in the frame");
        return;
    }
    if ((uintptr_t)fp % 64 != 0)
        ILL_BAD("the FPU state at %p is not 64-byte aligned", (void *)fp);
    else if (fp->mxcsr != want_mxcsr)
        ILL_BAD("the frame's MXCSR is %#x, expected %#x", fp->mxcsr, want_mxcsr);
    for (int i = 0; i < 16 && !ill_problem[0]; i++)
        if (memcmp(fp->xmm[i], fpu_pattern + stride * i, 16) != 0)
            ILL_BAD("the frame's xmm%d differs from what the app loaded", i);
    if (ill_problem[0] || !(uc->uc_flags & UC_FP_XSTATE))
        return;
    const uint32_t *sw = (const uint32_t *)((const char *)fp + FPX_SW_OFFSET);
    uint32_t extended = sw[1], size = sw[4];
    if (sw[0] != XSTATE_MAGIC1)
        ILL_BAD("magic1 is %#x", sw[0]);
    else if (extended != size + 4)
        ILL_BAD("extended_size %u, xstate_size %u", extended, size);
    else if (*(const uint32_t *)((const char *)fp + size) != XSTATE_MAGIC2)
        ILL_BAD("no magic2 after the XSAVE area");
    else if ((((const uint64_t *)fp)[64] & 3) != 3)
        ILL_BAD("XSTATE_BV %#llx lacks x87 and SSE", (unsigned long long)((const uint64_t *)fp)[64]);
}

static void on_sigill(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    (void)sig;
    ill_count++;
    ill_info = *si;
    switch (ill_mode) {
    case ILL_RECORD:
    case ILL_SKIP:
        g[REG_RIP] += 2;
        break;
    case ILL_REGS: {
        static const int order[] = {REG_RAX, REG_RBX, REG_RCX, REG_RDX, REG_RSI, REG_RDI,
                                    REG_RBP, REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12,
                                    REG_R13, REG_R14, REG_R15};
        for (int i = 0; i < 15; i++)
            if ((uint64_t)g[order[i]] != PATTERN(i + 1))
                ILL_BAD("register %d in the frame is %#llx", i, (unsigned long long)g[order[i]]);
        if ((uint64_t)g[REG_RIP] != (uint64_t)(uintptr_t)regs_probe_insn)
            ILL_BAD("the frame's rip is %#llx", (unsigned long long)g[REG_RIP]);
        if (!(g[REG_EFL] & 0x400))
            ILL_BAD("the frame's rflags %#llx lack DF", (unsigned long long)g[REG_EFL]);
        if (read_flags() & 0x400)
            ILL_BAD("the handler runs with DF set");
        g[REG_RIP] += 2;
        g[REG_RAX] = 0x1234;
        g[REG_R15] = 0x4321;
        /* Privileged flags in the returned frame are dropped: IOPL 3 and NT. */
        g[REG_EFL] |= 0x3000 | 0x4000;
        break;
    }
    case ILL_SSE:
    case ILL_AVX:
        if (read_mxcsr() != 0x1f80)
            ILL_BAD("the handler starts with MXCSR %#x", read_mxcsr());
        check_frame_fpu(uc, ill_mode == ILL_SSE ? 0x7f80 : 0x1f80, ill_mode == ILL_SSE ? 16 : 32);
        /* Clobber the vector registers and MXCSR: the return restores them. */
        if (have_avx)
            __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n"
                             "vmovdqa %%ymm0, %%ymm7\n vmovdqa %%ymm0, %%ymm15\n"
                             "vzeroupper" ::: "xmm0", "xmm7", "xmm15");
        __asm__ volatile("pcmpeqd %%xmm1, %%xmm1\n pxor %%xmm3, %%xmm3\n"
                         "pxor %%xmm9, %%xmm9" ::: "xmm1", "xmm3", "xmm9");
        {
            uint32_t m = 0x9fc0;
            __asm__ volatile("ldmxcsr %0" ::"m"(m));
        }
        g[REG_RIP] += 2;
        break;
    case ILL_BAD_CS:
        g[REG_CSGSFS] = (g[REG_CSGSFS] & ~0xffffLL) | 0x10;
        break;
    case ILL_BAD_RIP:
        g[REG_RIP] = 0x0000800000000000LL;
        break;
    }
}

/* SIGSEGV and SIGFPE handlers that record what they saw and jump back. */
static sigjmp_buf jump;
static volatile int segv_count;
static siginfo_t segv_info;
static ucontext_t segv_uc;
static volatile int segv_mprotect; /* make the page writable and return */

static void on_sigsegv(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    segv_count++;
    segv_info = *si;
    memcpy(&segv_uc, ctx, sizeof segv_uc);
    if (segv_mprotect) {
        uintptr_t page = (uintptr_t)si->si_addr & ~(uintptr_t)4095;
        mprotect((void *)page, 4096, PROT_READ | PROT_WRITE);
        return;
    }
    siglongjmp(jump, 1);
}

static void install(int sig, void (*fn)(int, siginfo_t *, void *), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void set_default(int sig)
{
    signal(sig, SIG_DFL);
}

static sigset_t current_mask(void)
{
    sigset_t s;
    sigprocmask(SIG_BLOCK, NULL, &s);
    return s;
}

static void unblock_all(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigprocmask(SIG_SETMASK, &s, NULL);
}

/* ---------------------------------------------------------------------------
 * Faults */

static const char *check_segv_maperr(void)
{
    install(SIGSEGV, on_sigsegv, 0);
    segv_count = 0;
    volatile int *bad = (volatile int *)16;
    if (sigsetjmp(jump, 1) == 0) {
        (void)*bad;
        set_default(SIGSEGV);
        return "reading address 16 did not fault";
    }
    set_default(SIGSEGV);
    if (segv_count != 1)
        return BAD("the handler ran %d times", segv_count);
    if (segv_info.si_signo != SIGSEGV || segv_info.si_code != SEGV_MAPERR)
        return BAD("signo %d code %d", segv_info.si_signo, segv_info.si_code);
    if (segv_info.si_addr != (void *)16)
        return BAD("si_addr %p", segv_info.si_addr);
    greg_t *g = segv_uc.uc_mcontext.gregs;
    if (g[REG_TRAPNO] != 14 || g[REG_CR2] != 16 || !(g[REG_ERR] & 4))
        return BAD("trapno %lld cr2 %#llx err %#llx", (long long)g[REG_TRAPNO],
                   (long long)g[REG_CR2], (long long)g[REG_ERR]);
    return NULL;
}

static const char *check_segv_accerr_and_return(void)
{
    install(SIGSEGV, on_sigsegv, 0);
    segv_count = 0;
    volatile int *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return "mmap failed";
    segv_mprotect = 1;
    page[3] = 42; /* faults, the handler makes it writable, the store is redone */
    segv_mprotect = 0;
    BARRIER();
    set_default(SIGSEGV);
    int value = page[3];
    munmap((void *)page, 4096);
    if (segv_count != 1)
        return BAD("the handler ran %d times", segv_count);
    if (segv_info.si_code != SEGV_ACCERR || segv_info.si_addr != (void *)(page + 3))
        return BAD("code %d addr %p, expected %d %p", segv_info.si_code, segv_info.si_addr,
                   SEGV_ACCERR, (void *)(page + 3));
    if (value != 42)
        return BAD("the redone store left %d", value);
    return NULL;
}

static volatile int fpe_count;
static siginfo_t fpe_info;

static void on_sigfpe(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    fpe_count++;
    fpe_info = *si;
    siglongjmp(jump, 1);
}

static const char *check_sigfpe_divide(void)
{
    install(SIGFPE, on_sigfpe, 0);
    volatile int zero = 0, r = 0;
    if (sigsetjmp(jump, 1) == 0) {
        r = 7 / zero;
        set_default(SIGFPE);
        return BAD("7 / 0 gave %d", r);
    }
    set_default(SIGFPE);
    if (fpe_count != 1 || fpe_info.si_code != FPE_INTDIV || fpe_info.si_addr == NULL)
        return BAD("count %d code %d addr %p", fpe_count, fpe_info.si_code, fpe_info.si_addr);
    return NULL;
}

static const char *check_sigill_ud2(void)
{
    install(SIGILL, on_sigill, 0);
    ill_mode = ILL_RECORD;
    ill_count = 0;
    ud2_probe();
    set_default(SIGILL);
    if (ill_count != 1)
        return BAD("the handler ran %d times", ill_count);
    if (ill_info.si_code != ILL_ILLOPN || ill_info.si_addr != (void *)ud2_probe_insn)
        return BAD("code %d addr %p, expected %d %p", ill_info.si_code, ill_info.si_addr,
                   ILL_ILLOPN, (void *)ud2_probe_insn);
    return NULL;
}

static const char *check_registers_restored(void)
{
    uint64_t out[17];
    install(SIGILL, on_sigill, 0);
    ill_mode = ILL_REGS;
    ill_problem[0] = 0;
    regs_probe(out);
    set_default(SIGILL);
    if (ill_problem[0])
        return BAD("%s", ill_problem);
    for (int i = 0; i < 15; i++) {
        uint64_t want = i == 0 ? 0x1234 : i == 14 ? 0x4321 : PATTERN(i + 1);
        if (out[i] != want)
            return BAD("register %d is %#llx after the return, expected %#llx", i,
                       (unsigned long long)out[i], (unsigned long long)want);
    }
    uint64_t flags = out[15];
    if (!(flags & 0x400))
        return BAD("DF was not restored (rflags %#llx)", (unsigned long long)flags);
    if (flags & 0x7000)
        return BAD("the frame set IOPL or NT (rflags %#llx)", (unsigned long long)flags);
    return NULL;
}

static const char *check_fpu_restored(void)
{
    uint8_t out[512];
    uint32_t mxcsr = 0;
    for (int i = 0; i < 512; i++)
        fpu_pattern[i] = (uint8_t)(i * 7 + 3);
    install(SIGILL, on_sigill, 0);
    ill_problem[0] = 0;
    ill_mode = ILL_SSE;
    sse_probe(fpu_pattern, out, &mxcsr);
    if (ill_problem[0]) {
        set_default(SIGILL);
        return BAD("sse: %s", ill_problem);
    }
    if (memcmp(out, fpu_pattern, 256) != 0)
        return "the xmm registers differ after the return";
    if (mxcsr != 0x7f80)
        return BAD("MXCSR is %#x after the return, expected 0x7f80", mxcsr);
    if (have_avx) {
        ill_mode = ILL_AVX;
        avx_probe(fpu_pattern, out);
        if (ill_problem[0]) {
            set_default(SIGILL);
            return BAD("avx: %s", ill_problem);
        }
        if (memcmp(out, fpu_pattern, 512) != 0)
            return "the ymm registers differ after the return";
    }
    set_default(SIGILL);
    return NULL;
}

static const char *check_sigreturn_bad_segment(int mode)
{
    install(SIGILL, on_sigill, 0);
    install(SIGSEGV, on_sigsegv, 0);
    ill_mode = mode;
    segv_count = 0;
    if (sigsetjmp(jump, 1) == 0) {
        ud2_probe();
        set_default(SIGILL);
        set_default(SIGSEGV);
        return "the return went through";
    }
    set_default(SIGILL);
    set_default(SIGSEGV);
    if (segv_count != 1 || segv_info.si_code != SI_KERNEL)
        return BAD("SIGSEGV count %d code %d", segv_count, segv_info.si_code);
    return NULL;
}

/* ---------------------------------------------------------------------------
 * The alternate stack */

static char altstack[64 * 1024];
static volatile int alt_on, alt_flags_onstack, alt_saved_ok;

static void on_usr1_alt(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    char here;
    stack_t cur;
    (void)sig;
    (void)si;
    alt_on = &here >= altstack && &here < altstack + sizeof altstack;
    alt_flags_onstack = sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_ONSTACK);
    alt_saved_ok = uc->uc_stack.ss_sp == altstack && uc->uc_stack.ss_size == sizeof altstack;
}

static const char *check_altstack_onstack(void)
{
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0}, after;
    if (sigaltstack(&ss, NULL) != 0)
        return "sigaltstack failed";
    install(SIGUSR1, on_usr1_alt, SA_ONSTACK);
    raise(SIGUSR1);
    set_default(SIGUSR1);
    sigaltstack(NULL, &after);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    if (!alt_on)
        return "the handler did not run on the alternate stack";
    if (!alt_flags_onstack)
        return "sigaltstack in the handler did not say SS_ONSTACK";
    if (!alt_saved_ok)
        return "the frame's uc_stack is not the alternate stack";
    if (after.ss_flags != 0)
        return BAD("after the handler the flags are %d", after.ss_flags);
    return NULL;
}

static volatile int overflow_depth, overflow_limit = 1 << 30;

static int recurse(int n)
{
    volatile char pad[1024];
    pad[0] = (char)n;
    overflow_depth = n;
    if (n == overflow_limit)
        return 0;
    return recurse(n + 1) + pad[0];
}

static const char *check_stack_overflow_on_altstack(void)
{
    /* The same stack limit natively as nacre's stack area. */
    struct rlimit rl = {8 << 20, 8 << 20};
    setrlimit(RLIMIT_STACK, &rl);
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    install(SIGSEGV, on_sigsegv, SA_ONSTACK);
    segv_count = 0;
    if (sigsetjmp(jump, 1) == 0) {
        recurse(0);
        return "the recursion ended";
    }
    set_default(SIGSEGV);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    if (segv_count != 1 || segv_info.si_code != SEGV_MAPERR)
        return BAD("count %d code %d", segv_count, segv_info.si_code);
    if (overflow_depth < 1000)
        return BAD("overflowed at depth %d", overflow_depth);
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Masks and pending signals */

static volatile int usr1_count, usr2_count;
static char order[16];
static volatile int order_len;
static siginfo_t usr1_info;

static void on_usr1_count(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    usr1_info = *si;
    usr1_count++;
}

static const char *check_blocked_then_unblocked(void)
{
    install(SIGUSR1, on_usr1_count, 0);
    usr1_count = 0;
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    int before = usr1_count;
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    int after = usr1_count;
    sigpending(&pending);
    int still_pending = sigismember(&pending, SIGUSR1);
    set_default(SIGUSR1);
    if (before != 0)
        return "the handler ran while the signal was blocked";
    if (!was_pending)
        return "sigpending did not report the blocked signal";
    if (after != 1)
        return BAD("after unblocking, the handler had run %d times", after);
    if (still_pending)
        return "the signal is still pending after delivery";
    return NULL;
}

static void on_usr1_masked(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    (void)ctx;
    sigset_t in = current_mask();
    order[order_len++] = sigismember(&in, SIGUSR1) ? '1' : 'x';
    order[order_len++] = sigismember(&in, SIGUSR2) ? '2' : 'x';
    raise(SIGUSR2);
    order[order_len++] = '.';
}

static void on_usr2_order(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    (void)ctx;
    order[order_len++] = 'B';
}

static const char *check_handler_mask(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1_masked;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    install(SIGUSR2, on_usr2_order, 0);
    order_len = 0;
    raise(SIGUSR1);
    BARRIER();
    order[order_len] = 0;
    set_default(SIGUSR1);
    set_default(SIGUSR2);
    sigset_t after = current_mask();
    /* In the handler: USR1 and USR2 blocked; USR2 raised there runs after it. */
    if (strcmp(order, "12.B") != 0)
        return BAD("events \"%s\", expected \"12.B\"", order);
    if (sigismember(&after, SIGUSR1) || sigismember(&after, SIGUSR2))
        return "the handler's mask stayed after it returned";
    return NULL;
}

static volatile int depth, max_depth;

static void on_usr1_nested(int sig, siginfo_t *si, void *ctx)
{
    (void)si;
    (void)ctx;
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    if (usr1_count++ == 0)
        raise(sig);
    depth--;
}

static const char *check_nodefer(void)
{
    for (int nodefer = 0; nodefer < 2; nodefer++) {
        install(SIGUSR1, on_usr1_nested, nodefer ? SA_NODEFER : 0);
        usr1_count = depth = max_depth = 0;
        raise(SIGUSR1);
        if (usr1_count != 2 || max_depth != (nodefer ? 2 : 1))
            return BAD("%s: ran %d times, %d deep", nodefer ? "SA_NODEFER" : "default",
                       usr1_count, max_depth);
    }
    set_default(SIGUSR1);
    return NULL;
}

static const char *check_resethand(void)
{
    install(SIGUSR1, on_usr1_count, SA_RESETHAND);
    usr1_count = 0;
    raise(SIGUSR1);
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    if (usr1_count != 1)
        return BAD("the handler ran %d times", usr1_count);
    if (now.sa_handler != SIG_DFL)
        return "the disposition is not SIG_DFL after the first delivery";
    return NULL;
}

static void on_usr1_plain(int sig)
{
    usr1_count = sig;
}

static const char *check_plain_handler(void)
{
    usr1_count = 0;
    signal(SIGUSR1, on_usr1_plain);
    kill(getpid(), SIGUSR1);
    set_default(SIGUSR1);
    return usr1_count == SIGUSR1 ? NULL : BAD("the handler got %d", usr1_count);
}

static const char *check_kill_and_tgkill_siginfo(void)
{
    install(SIGUSR1, on_usr1_count, 0);
    kill(getpid(), SIGUSR1);
    siginfo_t by_kill = usr1_info;
    BARRIER();
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1);
    BARRIER();
    siginfo_t by_tgkill = usr1_info;
    set_default(SIGUSR1);
    if (by_kill.si_code != SI_USER || by_kill.si_pid != getpid() || by_kill.si_uid != getuid())
        return BAD("kill: code %d pid %d uid %d", by_kill.si_code, by_kill.si_pid,
                   by_kill.si_uid);
    if (by_tgkill.si_code != SI_TKILL || by_tgkill.si_pid != getpid())
        return BAD("tgkill: code %d pid %d", by_tgkill.si_code, by_tgkill.si_pid);
    return NULL;
}

static const char *check_sig_ign_discards_pending(void)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR2);
    signal(SIGUSR2, SIG_IGN);
    sigpending(&pending);
    int kept = sigismember(&pending, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    set_default(SIGUSR2);
    return kept ? "the pending signal survived SIG_IGN" : NULL;
}

static const char *check_default_ignored(void)
{
    raise(SIGURG);
    raise(SIGCHLD);
    raise(SIGWINCH);
    return NULL;
}

static const char *check_sigtimedwait(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    siginfo_t si;
    struct timespec zero = {0, 0}, short_wait = {0, 10 * 1000 * 1000};
    int got = sigtimedwait(&set, &si, &zero);
    errno = 0;
    int again = sigtimedwait(&set, &si, &short_wait);
    int again_errno = errno;
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    if (got != SIGUSR1)
        return BAD("sigtimedwait returned %d", got);
    if (again != -1 || again_errno != EAGAIN)
        return BAD("the second wait returned %d errno %d", again, again_errno);
    return NULL;
}

/* ---------------------------------------------------------------------------
 * The timer, restarted and interrupted calls */

static volatile int alrm_count;
static volatile uint32_t futex_word;

static void on_alrm(int sig)
{
    (void)sig;
    alrm_count++;
    futex_word = 1;
}

static void alrm_handler(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
}

static void arm_ms(int ms)
{
    struct itimerval it = {{0, 0}, {0, ms * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static const char *check_sa_restart_futex(void)
{
    for (int restart = 0; restart < 2; restart++) {
        alrm_handler(restart ? SA_RESTART : 0);
        alrm_count = 0;
        futex_word = 0;
        arm_ms(20);
        errno = 0;
        long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        int e = errno;
        int want = restart ? EAGAIN : EINTR;
        if (r != -1 || e != want || alrm_count != 1)
            return BAD("%s: futex returned %ld errno %d (expected %d), %d alarms",
                       restart ? "SA_RESTART" : "no SA_RESTART", r, e, want, alrm_count);
    }
    set_default(SIGALRM);
    return NULL;
}

static const char *check_nanosleep_eintr(void)
{
    alrm_handler(SA_RESTART);
    alrm_count = 0;
    arm_ms(20);
    struct timespec req = {2, 0}, rem = {0, 0};
    errno = 0;
    int r = nanosleep(&req, &rem);
    int e = errno;
    set_default(SIGALRM);
    if (r != -1 || e != EINTR || alrm_count != 1)
        return BAD("nanosleep returned %d errno %d, %d alarms", r, e, alrm_count);
    if (rem.tv_sec != 1 || rem.tv_nsec < 500 * 1000 * 1000)
        return BAD("%ld.%09ld s left", (long)rem.tv_sec, rem.tv_nsec);
    return NULL;
}

static const char *check_sigsuspend(void)
{
    alrm_handler(0);
    alrm_count = 0;
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &block, NULL);
    arm_ms(20);
    errno = 0;
    int r = sigsuspend(&empty);
    int e = errno;
    sigset_t after = current_mask();
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    set_default(SIGALRM);
    if (r != -1 || e != EINTR || alrm_count != 1)
        return BAD("sigsuspend returned %d errno %d, %d alarms", r, e, alrm_count);
    if (!sigismember(&after, SIGALRM))
        return "the mask sigsuspend replaced was not put back";
    return NULL;
}

static const char *check_pause(void)
{
    alrm_handler(SA_RESTART);
    alrm_count = 0;
    arm_ms(20);
    errno = 0;
    int r = pause();
    int e = errno;
    set_default(SIGALRM);
    if (r != -1 || e != EINTR || alrm_count != 1)
        return BAD("pause returned %d errno %d, %d alarms", r, e, alrm_count);
    return NULL;
}

static const char *check_sigtimedwait_timer(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    arm_ms(20);
    siginfo_t si;
    struct timespec limit = {5, 0};
    int got = sigtimedwait(&set, &si, &limit);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    BARRIER();
    if (got != SIGALRM || si.si_code != SI_KERNEL)
        return BAD("got %d code %d", got, si.si_code);
    return NULL;
}

static const char *check_alarm_remaining(void)
{
    alarm(10);
    unsigned left = alarm(0);
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    if (left != 10)
        return BAD("alarm(0) said %u s were left", left);
    if (it.it_value.tv_sec || it.it_value.tv_usec)
        return "the timer is still armed";
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Modes that end the process */

static void on_abrt(int sig)
{
    (void)sig;
    printf("SIGABRT handler returns\n");
    fflush(stdout);
}

static void on_segv_exit(int sig)
{
    (void)sig;
    static const char msg[] = "SIGSEGV after a frame that could not be written\n";
    write(1, msg, sizeof msg - 1);
    _exit(3);
}

static void on_usr1_never(int sig)
{
    (void)sig;
    static const char msg[] = "the handler ran\n";
    write(1, msg, sizeof msg - 1);
}

static int bad_altstack(int caught)
{
    void *stack = mmap(NULL, 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_t ss = {.ss_sp = stack, .ss_size = 65536, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1_never;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    if (caught)
        signal(SIGSEGV, on_segv_exit);
    printf("raising SIGUSR1\n");
    fflush(stdout);
    raise(SIGUSR1);
    printf("survived\n");
    return 1;
}

static int bad_sigreturn(void)
{
    printf("rt_sigreturn with a bad frame\n");
    fflush(stdout);
    /* The frame is read below RSP: point RSP at unmapped memory. */
    __asm__ volatile("mov $16, %%rsp\n"
                     "mov %0, %%eax\n"
                     "syscall" ::"i"(SYS_rt_sigreturn)
                     : "memory");
    return 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "checks";
    __builtin_cpu_init();
    have_avx = __builtin_cpu_supports("avx");
    if (strcmp(mode, "abort") == 0 || strcmp(mode, "abort-handler") == 0) {
        if (mode[5])
            signal(SIGABRT, on_abrt);
        printf("about to abort\n");
        fflush(stdout);
        abort();
    }
    if (strcmp(mode, "segv") == 0) {
        printf("about to fault\n");
        fflush(stdout);
        volatile int *volatile bad = (volatile int *)16;
        return *bad;
    }
    if (strcmp(mode, "bad-altstack") == 0)
        return bad_altstack(0);
    if (strcmp(mode, "bad-altstack-caught") == 0)
        return bad_altstack(1);
    if (strcmp(mode, "bad-sigreturn") == 0)
        return bad_sigreturn();
    if (strcmp(mode, "checks") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }

    report("segv_maperr_siginfo_siglongjmp", check_segv_maperr());
    report("segv_accerr_handler_returns", check_segv_accerr_and_return());
    report("sigfpe_divide_by_zero", check_sigfpe_divide());
    report("sigill_ud2", check_sigill_ud2());
    report("registers_restored", check_registers_restored());
    report("fpu_state_restored", check_fpu_restored());
    report("sigreturn_kernel_cs_segv", check_sigreturn_bad_segment(ILL_BAD_CS));
    report("sigreturn_noncanonical_rip_segv", check_sigreturn_bad_segment(ILL_BAD_RIP));
    report("altstack_onstack", check_altstack_onstack());
    report("stack_overflow_on_altstack", check_stack_overflow_on_altstack());
    report("blocked_then_unblocked", check_blocked_then_unblocked());
    report("handler_mask", check_handler_mask());
    report("nodefer", check_nodefer());
    report("resethand", check_resethand());
    report("plain_handler", check_plain_handler());
    report("kill_and_tgkill_siginfo", check_kill_and_tgkill_siginfo());
    report("sig_ign_discards_pending", check_sig_ign_discards_pending());
    report("default_ignored", check_default_ignored());
    report("sigtimedwait", check_sigtimedwait());
    report("sa_restart_futex", check_sa_restart_futex());
    report("nanosleep_eintr", check_nanosleep_eintr());
    report("sigsuspend", check_sigsuspend());
    report("pause", check_pause());
    report("sigtimedwait_timer", check_sigtimedwait_timer());
    report("alarm_remaining", check_alarm_remaining());
    unblock_all();
    return failures ? 1 : 0;
}
