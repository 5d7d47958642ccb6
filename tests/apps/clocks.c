/*
 * Clock checks, for nacre's tests: the vDSO the kernel maps into the
 * process (AT_SYSINFO_EHDR) is a well-formed ELF shared object exporting
 * Linux's x86-64 vDSO functions, and the clocks read through the libc (which
 * uses that vDSO) and through the vDSO's own functions are monotonic, agree
 * with each other, and tick at the same rate.
 *
 * Build: gcc -static -O2 clocks.c -o clocks   (or musl-gcc -static -O2)
 * Usage: clocks            the checks below, through the libc and the vDSO:
 *                          no clock_gettime, gettimeofday or time syscall is
 *                          made on purpose (nanosleep is the only time
 *                          syscall), so a kernel whose vDSO works sees none
 *        clocks syscalls   the same clocks read through the vDSO and through
 *                          the syscalls: exactly SYSCALL_READS clock_gettime,
 *                          SYSCALL_READS gettimeofday and SYSCALL_READS time
 *                          syscalls, each between two vDSO reads, and one
 *                          clock_gettime of an unknown clock (which the vDSO
 *                          passes to the syscall)
 * Prints one line per check, "ok <name>" or "FAIL <name>: <detail>"; exit
 * code 0 when every check passed, else 1; 2 for a usage error.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Reads per clock in the monotonicity checks. */
#define READS 100000
/* Reads per call in the syscalls mode: its syscall counts. */
#define SYSCALL_READS 5
/* How long the rate check sleeps. */
#define SLEEP_NS 20000000LL
#define NS_PER_SEC 1000000000LL

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

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * NS_PER_SEC + t->tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* The vDSO, found and read without the dynamic loader */

/* The symbols Linux's x86-64 vDSO exports (arch/x86/entry/vdso/vdso.lds.S),
 * all in version LINUX_2.6. */
static const char *const VDSO_NAMES[] = {
    "__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time",
    "__vdso_getcpu",        "__vdso_clock_getres",
};
#define NVDSO (sizeof VDSO_NAMES / sizeof VDSO_NAMES[0])

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);
typedef int (*getcpu_fn)(unsigned *, unsigned *, void *);
typedef int (*clock_getres_fn)(clockid_t, struct timespec *);

static struct {
    const unsigned char *base; /* the ELF header: AT_SYSINFO_EHDR */
    uintptr_t bias;            /* run-time address minus link-time address */
    const Elf64_Sym *symtab;
    const char *strtab;
    const Elf64_Word *hash;     /* DT_HASH */
    const uint32_t *gnu_hash;   /* DT_GNU_HASH */
    const Elf64_Versym *versym; /* DT_VERSYM */
    const Elf64_Verdef *verdef; /* DT_VERDEF */
    void *fn[NVDSO];            /* found through DT_HASH */
} vdso;

/* The dynamic table's pointers are link-time addresses: add the bias. */
static const void *at(Elf64_Addr addr)
{
    return (const void *)(addr + vdso.bias);
}

static int check_vdso_auxv(void)
{
    unsigned long ehdr = getauxval(AT_SYSINFO_EHDR);
    if (ehdr == 0)
        return bad("getauxval(AT_SYSINFO_EHDR) is 0: no vDSO");
    if (ehdr % 4096 != 0)
        return bad("AT_SYSINFO_EHDR %#lx is not page-aligned", ehdr);
    vdso.base = (const unsigned char *)ehdr;
    return 0;
}

static int check_vdso_elf_header(void)
{
    if (!vdso.base)
        return bad("no vDSO");
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)vdso.base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return bad("no ELF magic");
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return bad("not ELF64 little-endian");
    if (eh->e_type != ET_DYN || eh->e_machine != EM_X86_64)
        return bad("e_type %u e_machine %u: not an x86-64 shared object", eh->e_type,
                   eh->e_machine);
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0)
        return bad("e_phentsize %u e_phnum %u", eh->e_phentsize, eh->e_phnum);
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(vdso.base + eh->e_phoff);
    const Elf64_Phdr *load = NULL, *dyn = NULL;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !load)
            load = &ph[i];
        if (ph[i].p_type == PT_DYNAMIC)
            dyn = &ph[i];
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_W))
            return bad("a writable PT_LOAD");
    }
    if (!load || !dyn)
        return bad("no PT_LOAD or no PT_DYNAMIC");
    if (load->p_offset != 0 || !(load->p_flags & PF_X))
        return bad("the first PT_LOAD does not map the header executable");
    vdso.bias = (uintptr_t)vdso.base - load->p_vaddr;
    for (const Elf64_Dyn *d = at(dyn->p_vaddr); d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: vdso.symtab = at(d->d_un.d_ptr); break;
        case DT_STRTAB: vdso.strtab = at(d->d_un.d_ptr); break;
        case DT_HASH: vdso.hash = at(d->d_un.d_ptr); break;
        case DT_GNU_HASH: vdso.gnu_hash = at(d->d_un.d_ptr); break;
        case DT_VERSYM: vdso.versym = at(d->d_un.d_ptr); break;
        case DT_VERDEF: vdso.verdef = at(d->d_un.d_ptr); break;
        case DT_REL:
        case DT_RELA:
        case DT_TEXTREL: return bad("dynamic tag %ld: a vDSO is never relocated", (long)d->d_tag);
        default: break;
        }
    }
    if (!vdso.symtab || !vdso.strtab || !vdso.hash || !vdso.gnu_hash || !vdso.versym ||
        !vdso.verdef)
        return bad("missing dynamic tags: symtab %p strtab %p hash %p gnu_hash %p versym %p "
                   "verdef %p",
                   (const void *)vdso.symtab, (const void *)vdso.strtab,
                   (const void *)vdso.hash, (const void *)vdso.gnu_hash,
                   (const void *)vdso.versym, (const void *)vdso.verdef);
    return 0;
}

/* The SysV ELF hash (gABI, "Hash Table"). */
static uint32_t elf_hash(const char *name)
{
    uint32_t h = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h = (h << 4) + *p;
        uint32_t g = h & 0xf0000000;
        if (g)
            h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

/* The GNU hash (DJB's, as binutils' DT_GNU_HASH uses it). */
static uint32_t gnu_hash(const char *name)
{
    uint32_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = h * 33 + *p;
    return h;
}

/* Whether symbol `i` is in version `want` (through DT_VERSYM and DT_VERDEF). */
static int has_version(uint32_t i, const char *want)
{
    Elf64_Versym v = vdso.versym[i] & 0x7fff;
    const Elf64_Verdef *d = vdso.verdef;
    for (;;) {
        if (d->vd_ndx == v) {
            const Elf64_Verdaux *aux = (const void *)((const char *)d + d->vd_aux);
            return strcmp(vdso.strtab + aux->vda_name, want) == 0;
        }
        if (d->vd_next == 0)
            return 0;
        d = (const void *)((const char *)d + d->vd_next);
    }
}

/* A defined function named `name`, in LINUX_2.6, at index `i`? */
static int is_vdso_function(uint32_t i, const char *name)
{
    const Elf64_Sym *s = &vdso.symtab[i];
    return strcmp(vdso.strtab + s->st_name, name) == 0 && s->st_shndx != SHN_UNDEF &&
           ELF64_ST_TYPE(s->st_info) == STT_FUNC && has_version(i, "LINUX_2.6");
}

/* `name` looked up through DT_HASH, as musl does. */
static void *lookup_sysv(const char *name)
{
    uint32_t nbucket = vdso.hash[0];
    const Elf64_Word *bucket = &vdso.hash[2], *chain = &vdso.hash[2 + nbucket];
    for (uint32_t i = bucket[elf_hash(name) % nbucket]; i != STN_UNDEF; i = chain[i])
        if (is_vdso_function(i, name))
            return (void *)(vdso.symtab[i].st_value + vdso.bias);
    return NULL;
}

/* `name` looked up through DT_GNU_HASH, as glibc does. */
static void *lookup_gnu(const char *name)
{
    uint32_t nbuckets = vdso.gnu_hash[0], symoffset = vdso.gnu_hash[1];
    uint32_t bloom_size = vdso.gnu_hash[2], bloom_shift = vdso.gnu_hash[3];
    const uint64_t *bloom = (const uint64_t *)&vdso.gnu_hash[4];
    const uint32_t *buckets = (const uint32_t *)&bloom[bloom_size];
    const uint32_t *chain = &buckets[nbuckets];
    uint32_t h = gnu_hash(name);
    uint64_t word = bloom[(h / 64) % bloom_size];
    uint64_t mask = (1ull << (h % 64)) | (1ull << ((h >> bloom_shift) % 64));
    if ((word & mask) != mask)
        return NULL;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return NULL;
    for (;; i++) {
        uint32_t h2 = chain[i - symoffset];
        if ((h | 1) == (h2 | 1) && is_vdso_function(i, name))
            return (void *)(vdso.symtab[i].st_value + vdso.bias);
        if (h2 & 1)
            return NULL;
    }
}

static int check_vdso_symbols_sysv_hash(void)
{
    if (!vdso.hash)
        return bad("no DT_HASH");
    for (size_t i = 0; i < NVDSO; i++) {
        vdso.fn[i] = lookup_sysv(VDSO_NAMES[i]);
        if (!vdso.fn[i])
            return bad("%s (LINUX_2.6) not found through DT_HASH", VDSO_NAMES[i]);
    }
    return 0;
}

static int check_vdso_symbols_gnu_hash(void)
{
    if (!vdso.gnu_hash)
        return bad("no DT_GNU_HASH");
    for (size_t i = 0; i < NVDSO; i++) {
        void *fn = lookup_gnu(VDSO_NAMES[i]);
        if (!fn)
            return bad("%s (LINUX_2.6) not found through DT_GNU_HASH", VDSO_NAMES[i]);
        if (fn != vdso.fn[i])
            return bad("%s: DT_GNU_HASH gives %p, DT_HASH %p", VDSO_NAMES[i], fn, vdso.fn[i]);
    }
    return 0;
}

static int check_vdso_has_no_unknown_name(void)
{
    if (!vdso.gnu_hash)
        return bad("no DT_GNU_HASH");
    if (lookup_gnu("__vdso_no_such_function") || lookup_sysv("__vdso_no_such_function"))
        return bad("a name the vDSO does not define was found");
    return 0;
}

/* The vDSO's own functions, called directly, against the libc's. */
static int check_vdso_functions_agree_with_libc(void)
{
    if (!vdso.fn[0])
        return bad("the vDSO's functions were not found");
    clock_gettime_fn vgettime = (clock_gettime_fn)vdso.fn[0];
    gettimeofday_fn vgettimeofday = (gettimeofday_fn)vdso.fn[1];
    time_fn vtime = (time_fn)vdso.fn[2];
    getcpu_fn vgetcpu = (getcpu_fn)vdso.fn[3];
    clock_getres_fn vgetres = (clock_getres_fn)vdso.fn[4];

    struct timespec a, v, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int r = vgettime(CLOCK_MONOTONIC, &v);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (r != 0 || ns_of(&v) < ns_of(&a) || ns_of(&v) > ns_of(&b))
        return bad("__vdso_clock_gettime(MONOTONIC) returned %d, %lld not within [%lld, %lld]",
                   r, ns_of(&v), ns_of(&a), ns_of(&b));

    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &a);
    r = vgettimeofday(&tv, NULL);
    clock_gettime(CLOCK_REALTIME, &b);
    long long us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
    if (r != 0 || us < ns_of(&a) / 1000 || us > ns_of(&b) / 1000)
        return bad("__vdso_gettimeofday returned %d, %lld us not within [%lld, %lld] ns", r, us,
                   ns_of(&a), ns_of(&b));

    time_t stored = 0;
    time_t t = vtime(&stored);
    clock_gettime(CLOCK_REALTIME, &b);
    /* Linux's time() reads the time of the last tick: up to one second behind
     * a precise reading taken before it. */
    if (t != stored || t < a.tv_sec - 1 || t > b.tv_sec)
        return bad("__vdso_time gave %lld (stored %lld), not within [%lld - 1, %lld]",
                   (long long)t, (long long)stored, (long long)a.tv_sec, (long long)b.tv_sec);

    unsigned cpu = ~0u, node = ~0u;
    r = vgetcpu(&cpu, &node, NULL);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return bad("sched_getaffinity: %s", strerror(errno));
    if (r != 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set) || node == ~0u)
        return bad("__vdso_getcpu returned %d, cpu %u node %u", r, cpu, node);

    struct timespec res = {-1, -1};
    r = vgetres(CLOCK_MONOTONIC, &res);
    if (r != 0 || res.tv_sec != 0 || res.tv_nsec != 1)
        return bad("__vdso_clock_getres(MONOTONIC) returned %d, %lld.%09ld", r,
                   (long long)res.tv_sec, res.tv_nsec);
    r = vgetres(-1, &res);
    if (r != -EINVAL)
        return bad("__vdso_clock_getres(-1) returned %d, not -EINVAL", r);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Clocks through the libc */

struct clock {
    clockid_t id;
    const char *name;
    int coarse;
};

static const struct clock CLOCKS[] = {
    {CLOCK_REALTIME, "realtime", 0},
    {CLOCK_MONOTONIC, "monotonic", 0},
    {CLOCK_MONOTONIC_RAW, "monotonic_raw", 0},
    {CLOCK_REALTIME_COARSE, "realtime_coarse", 1},
    {CLOCK_MONOTONIC_COARSE, "monotonic_coarse", 1},
    {CLOCK_BOOTTIME, "boottime", 0},
};
#define NCLOCKS (sizeof CLOCKS / sizeof CLOCKS[0])

static const struct clock *current;

/* READS readings in a row never go backwards and are well formed. */
static int check_clock_monotonic(void)
{
    struct timespec t;
    long long last = -1;
    for (int i = 0; i < READS; i++) {
        if (clock_gettime(current->id, &t) != 0)
            return bad("clock_gettime: %s", strerror(errno));
        if (t.tv_sec < 0 || t.tv_nsec < 0 || t.tv_nsec >= NS_PER_SEC)
            return bad("reading %d: %lld.%09ld is malformed", i, (long long)t.tv_sec, t.tv_nsec);
        if (ns_of(&t) < last)
            return bad("reading %d: %lld went back from %lld", i, ns_of(&t), last);
        last = ns_of(&t);
    }
    return 0;
}

/* 1 ns for the precise clocks; one tick (1 us to 10 ms) for the coarse ones. */
static int check_clock_resolution(void)
{
    struct timespec res;
    if (clock_getres(current->id, &res) != 0)
        return bad("clock_getres: %s", strerror(errno));
    long long ns = ns_of(&res);
    if (!current->coarse && ns != 1)
        return bad("resolution %lld ns, expected 1", ns);
    if (current->coarse && (ns < 1000 || ns > 10000000))
        return bad("resolution %lld ns, expected one tick", ns);
    return 0;
}

static int check_realtime_after_2020(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    /* 2020-01-01T00:00:00Z. */
    if (t.tv_sec < 1577836800)
        return bad("CLOCK_REALTIME reads %lld", (long long)t.tv_sec);
    return 0;
}

/* gettimeofday and time read the wall clock that CLOCK_REALTIME reads. */
static int check_gettimeofday_and_time_agree(void)
{
    for (int i = 0; i < 1000; i++) {
        struct timespec a, b;
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &a);
        if (gettimeofday(&tv, NULL) != 0)
            return bad("gettimeofday: %s", strerror(errno));
        time_t t = time(NULL);
        clock_gettime(CLOCK_REALTIME, &b);
        long long us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000 || us < ns_of(&a) / 1000 ||
            us > ns_of(&b) / 1000)
            return bad("gettimeofday %lld us not within [%lld, %lld] ns", us, ns_of(&a),
                       ns_of(&b));
        if (t < a.tv_sec - 1 || t > b.tv_sec)
            return bad("time() %lld not within [%lld - 1, %lld]", (long long)t,
                       (long long)a.tv_sec, (long long)b.tv_sec);
    }
    return 0;
}

/* A coarse clock is at most a tick behind its precise clock, never ahead. */
static int coarse_agrees(clockid_t coarse, clockid_t fine)
{
    for (int i = 0; i < 1000; i++) {
        struct timespec c, f;
        clock_gettime(coarse, &c);
        clock_gettime(fine, &f);
        if (ns_of(&c) > ns_of(&f) || ns_of(&f) - ns_of(&c) > NS_PER_SEC / 10)
            return bad("coarse %lld, then precise %lld", ns_of(&c), ns_of(&f));
    }
    return 0;
}

static int check_realtime_coarse_agrees(void)
{
    return coarse_agrees(CLOCK_REALTIME_COARSE, CLOCK_REALTIME);
}

static int check_monotonic_coarse_agrees(void)
{
    return coarse_agrees(CLOCK_MONOTONIC_COARSE, CLOCK_MONOTONIC);
}

/* CLOCK_BOOTTIME is CLOCK_MONOTONIC plus the time spent suspended. */
static int check_boottime_not_behind_monotonic(void)
{
    struct timespec m, b;
    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_BOOTTIME, &b);
    if (ns_of(&b) < ns_of(&m))
        return bad("boottime %lld < monotonic %lld", ns_of(&b), ns_of(&m));
    return 0;
}

/* Across a 20 ms sleep every clock advances by about the same, at least the
 * sleep (the coarse ones to within a tick). */
static int check_clocks_advance_alike_across_a_sleep(void)
{
    struct timespec before[NCLOCKS], after[NCLOCKS];
    for (size_t i = 0; i < NCLOCKS; i++)
        clock_gettime(CLOCKS[i].id, &before[i]);
    struct timespec req = {0, SLEEP_NS};
    if (nanosleep(&req, NULL) != 0)
        return bad("nanosleep: %s", strerror(errno));
    for (size_t i = 0; i < NCLOCKS; i++)
        clock_gettime(CLOCKS[i].id, &after[i]);
    long long mono = ns_of(&after[1]) - ns_of(&before[1]);
    if (mono < SLEEP_NS || mono > 10 * NS_PER_SEC)
        return bad("monotonic advanced %lld ns across a %lld ns sleep", mono, SLEEP_NS);
    for (size_t i = 0; i < NCLOCKS; i++) {
        long long d = ns_of(&after[i]) - ns_of(&before[i]);
        long long slack = CLOCKS[i].coarse ? 20000000 : 5000000;
        if (d < mono - slack || d > mono + slack)
            return bad("%s advanced %lld ns, monotonic %lld ns", CLOCKS[i].name, d, mono);
    }
    return 0;
}

static int check_sched_getcpu(void)
{
    int cpu = sched_getcpu();
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return bad("sched_getaffinity: %s", strerror(errno));
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set))
        return bad("sched_getcpu() = %d (errno %d), not in the affinity set", cpu, errno);
    return 0;
}

static int check_clock_gettime_invalid_clock(void)
{
    struct timespec t;
    errno = 0;
    int r = clock_gettime((clockid_t)12345, &t);
    if (r != -1 || errno != EINVAL)
        return bad("clock_gettime(12345) returned %d, errno %d", r, errno);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The syscalls against the vDSO (`clocks syscalls`) */

static int check_syscall_clock_gettime_between_vdso_reads(void)
{
    static const clockid_t ids[SYSCALL_READS] = {
        CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC};
    for (int i = 0; i < SYSCALL_READS; i++) {
        struct timespec a, s, b;
        clock_gettime(ids[i], &a);
        long r = syscall(SYS_clock_gettime, ids[i], &s);
        clock_gettime(ids[i], &b);
        if (r != 0 || ns_of(&s) < ns_of(&a) || ns_of(&s) > ns_of(&b))
            return bad("clock %d: syscall returned %ld, %lld not within [%lld, %lld]", ids[i], r,
                       ns_of(&s), ns_of(&a), ns_of(&b));
    }
    return 0;
}

static int check_syscall_gettimeofday_between_vdso_reads(void)
{
    for (int i = 0; i < SYSCALL_READS; i++) {
        struct timespec a, b;
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &a);
        long r = syscall(SYS_gettimeofday, &tv, NULL);
        clock_gettime(CLOCK_REALTIME, &b);
        long long us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
        if (r != 0 || us < ns_of(&a) / 1000 || us > ns_of(&b) / 1000)
            return bad("syscall returned %ld, %lld us not within [%lld, %lld] ns", r, us,
                       ns_of(&a), ns_of(&b));
    }
    return 0;
}

static int check_syscall_time_between_vdso_reads(void)
{
    for (int i = 0; i < SYSCALL_READS; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_REALTIME, &a);
        long t = syscall(SYS_time, NULL);
        clock_gettime(CLOCK_REALTIME, &b);
        if (t < a.tv_sec - 1 || t > b.tv_sec)
            return bad("syscall time %ld not within [%lld - 1, %lld]", t, (long long)a.tv_sec,
                       (long long)b.tv_sec);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    int syscalls = argc == 2 && strcmp(argv[1], "syscalls") == 0;
    if (argc > 2 || (argc == 2 && !syscalls)) {
        fprintf(stderr, "usage: clocks [syscalls]\n");
        return 2;
    }
    run_check("vdso_auxv", check_vdso_auxv);
    run_check("vdso_elf_header", check_vdso_elf_header);
    run_check("vdso_symbols_sysv_hash", check_vdso_symbols_sysv_hash);
    run_check("vdso_symbols_gnu_hash", check_vdso_symbols_gnu_hash);
    run_check("vdso_has_no_unknown_name", check_vdso_has_no_unknown_name);
    if (syscalls) {
        run_check("syscall_clock_gettime_between_vdso_reads",
                  check_syscall_clock_gettime_between_vdso_reads);
        run_check("syscall_gettimeofday_between_vdso_reads",
                  check_syscall_gettimeofday_between_vdso_reads);
        run_check("syscall_time_between_vdso_reads", check_syscall_time_between_vdso_reads);
        run_check("clock_gettime_invalid_clock", check_clock_gettime_invalid_clock);
        return failures ? 1 : 0;
    }
    run_check("vdso_functions_agree_with_libc", check_vdso_functions_agree_with_libc);
    char name[64];
    for (size_t i = 0; i < NCLOCKS; i++) {
        current = &CLOCKS[i];
        snprintf(name, sizeof name, "%s_never_goes_back", current->name);
        run_check(name, check_clock_monotonic);
        snprintf(name, sizeof name, "%s_resolution", current->name);
        run_check(name, check_clock_resolution);
    }
    run_check("realtime_after_2020", check_realtime_after_2020);
    run_check("gettimeofday_and_time_agree", check_gettimeofday_and_time_agree);
    run_check("realtime_coarse_agrees", check_realtime_coarse_agrees);
    run_check("monotonic_coarse_agrees", check_monotonic_coarse_agrees);
    run_check("boottime_not_behind_monotonic", check_boottime_not_behind_monotonic);
    run_check("clocks_advance_alike_across_a_sleep", check_clocks_advance_alike_across_a_sleep);
    run_check("sched_getcpu", check_sched_getcpu);
    return failures ? 1 : 0;
}
