/*
 * Memory-management conformance checks, for nacre's tests: what a Linux
 * program may expect of mmap, munmap, mremap, madvise, mprotect, brk and
 * malloc. Every check holds on Linux; the same binary runs natively and
 * under nacre.
 *
 * Build: gcc -static -O2 memory.c -o memory
 * Usage: memory lazy N
 *            Maps 16 GiB (MAP_NORESERVE), writes one byte in every 4 KiB page
 *            of its first N MiB, reads them back and prints
 *            "touched N MiB of 16 GiB". Exit code 0, or 1 with the reason
 *            on stderr.
 *        memory checks FILE
 *            Runs every check in order, printing one line per check:
 *            "ok <name>" or "FAIL <name>: <detail>". FILE is a readable
 *            regular file of at least two pages whose size is not a multiple
 *            of 4 KiB (for the file-mapping checks). Exit code 0 when no
 *            check failed, else 1.
 * Exit code 2 for a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define KIB (1024UL)
#define MIB (1024UL * KIB)
#define GIB (1024UL * MIB)
#define PAGE (4 * KIB)
#define HUGE (2 * MIB)

#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

/* ------------------------------------------------------------------------ */
/* Reporting */

static int failures;
static char detail[512];
/* The file the file-mapping checks map (argv[2]). */
static const char *mapped_path;

/* Records why the running check failed; returns -1 for `return bad(...)`. */
static int bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return -1;
}

/* Records a failed call: "<what> returned <r>, errno <n> (<text>)". */
static int bad_errno(const char *what, long r)
{
    int err = errno;
    return bad("%s returned %ld, errno %d (%s)", what, r, err, strerror(err));
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
}

/* ------------------------------------------------------------------------ */
/* Patterns and mappings */

/* The 8-byte word at index `i` of pattern `seed`: never zero. */
static uint64_t pattern_word(size_t i, uint64_t seed)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ seed * 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 31;
    return x | 1;
}

/* Fills [p, p + len) (len a multiple of 8) with pattern `seed`, word `first`
 * on. */
static void fill_from(void *p, size_t len, uint64_t seed, size_t first)
{
    volatile uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        w[i] = pattern_word(first + i, seed);
}

static void fill(void *p, size_t len, uint64_t seed)
{
    fill_from(p, len, seed, 0);
}

/* Offset of the first byte of [p, p + len) that differs from pattern `seed`
 * (word `first` on), or -1. */
static long mismatch_from(const void *p, size_t len, uint64_t seed, size_t first)
{
    const volatile uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        if (w[i] != pattern_word(first + i, seed))
            return (long)(i * 8);
    return -1;
}

static long mismatch(const void *p, size_t len, uint64_t seed)
{
    return mismatch_from(p, len, seed, 0);
}

/* Offset of the first non-zero byte of [p, p + len), or -1. */
static long nonzero(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != 0)
            return (long)i;
    return -1;
}

static void *map_anon(size_t len)
{
    return mmap(NULL, len, RW, ANON, -1, 0);
}

/* An anonymous read-write mapping of `len` bytes whose start is `offset`
 * bytes past a multiple of `align`, or MAP_FAILED. */
static void *map_at_alignment(size_t len, size_t align, size_t offset)
{
    size_t span = len + align + offset;
    uint8_t *raw = map_anon(span);
    if (raw == MAP_FAILED)
        return MAP_FAILED;
    uintptr_t start = ((uintptr_t)raw + align - 1) / align * align + offset;
    uint8_t *p = (uint8_t *)start;
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (p + len < raw + span)
        munmap(p + len, (size_t)(raw + span - (p + len)));
    return p;
}

/* Whether no page of [p, p + len) is mapped: msync fails with ENOMEM. */
static int unmapped(void *p, size_t len)
{
    return msync(p, len, MS_ASYNC) == -1 && errno == ENOMEM;
}

/* ------------------------------------------------------------------------ */
/* mmap and munmap */

static int check_anon_zero(void)
{
    size_t len = 8 * MIB + 3 * PAGE;
    uint8_t *p = map_anon(len);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    long at = nonzero(p, len);
    if (at >= 0)
        return bad("byte %ld of a fresh mapping is %u", at, p[at]);
    fill(p, len, 1);
    at = mismatch(p, len, 1);
    munmap(p, len);
    return at >= 0 ? bad("wrote a pattern, byte %ld differs", at) : 0;
}

static int check_munmap_keeps_other_mapping(void)
{
    size_t len = 4 * MIB;
    uint8_t *a = map_anon(len);
    uint8_t *b = map_anon(len);
    if (a == MAP_FAILED || b == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(a, len, 2);
    fill(b, len, 3);
    if (munmap(a, len) != 0)
        return bad("munmap: %s", strerror(errno));
    long at = mismatch(b, len, 3);
    if (at >= 0)
        return bad("after munmap of %p, byte %ld of %p changed", (void *)a, at, (void *)b);
    if (!unmapped(a, len))
        return bad("the unmapped range still answers msync");
    munmap(b, len);
    return 0;
}

static int check_munmap_middle_keeps_edges(void)
{
    size_t len = 12 * MIB;
    uint8_t *p = map_at_alignment(len, HUGE, 0);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 4);
    /* A hole that starts and ends inside 2 MiB pages. */
    size_t hole = 3 * MIB + 5 * PAGE, hole_len = 4 * MIB;
    if (munmap(p + hole, hole_len) != 0)
        return bad("munmap: %s", strerror(errno));
    long at = mismatch(p, hole, 4);
    if (at >= 0)
        return bad("byte %ld before the hole changed", at);
    size_t after = hole + hole_len;
    at = mismatch_from(p + after, len - after, 4, after / 8);
    if (at >= 0)
        return bad("byte %ld after the hole changed", (long)after + at);
    if (!unmapped(p + hole, hole_len))
        return bad("the hole still answers msync");
    munmap(p, len);
    return 0;
}

/* A mapping smaller than 2 MiB with only its first page touched: ranges whose
 * edges are pages never touched. */
static uint8_t *map_first_page_touched(size_t len)
{
    uint8_t *p = map_anon(len);
    if (p != MAP_FAILED)
        p[0] = 0x42;
    return p;
}

static int check_munmap_untouched_edge(void)
{
    size_t len = 16 * PAGE;
    uint8_t *p = map_first_page_touched(len);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    int r = munmap(p + 4 * PAGE, 4 * PAGE);
    if (r != 0)
        return bad_errno("munmap of untouched pages 4-7 of 16", r);
    if (p[0] != 0x42)
        return bad("the touched first page changed");
    if (!unmapped(p + 4 * PAGE, 4 * PAGE))
        return bad("the unmapped pages still answer msync");
    p[8 * PAGE] = 1;
    p[15 * PAGE] = 1;
    munmap(p, len);
    return 0;
}

static int check_mprotect_untouched_edge(void)
{
    size_t len = 16 * PAGE;
    uint8_t *p = map_first_page_touched(len);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    int r = mprotect(p + 4 * PAGE, 4 * PAGE, PROT_READ);
    if (r != 0)
        return bad_errno("mprotect(PROT_READ) of untouched pages 4-7 of 16", r);
    if (p[4 * PAGE] != 0 || p[0] != 0x42)
        return bad("the pages do not read as before");
    r = mprotect(p + 4 * PAGE, 4 * PAGE, RW);
    if (r != 0)
        return bad_errno("mprotect back to PROT_READ | PROT_WRITE", r);
    p[4 * PAGE] = 1;
    munmap(p, len);
    return 0;
}

static int check_munmap_unaligned_einval(void)
{
    uint8_t *p = map_anon(2 * PAGE);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    errno = 0;
    int r = munmap(p + 1, PAGE);
    int e = errno;
    if (r != -1 || e != EINVAL)
        return bad("munmap(p + 1) returned %d, errno %d (%s), expected EINVAL", r, e,
                   strerror(e));
    p[0] = 1;
    munmap(p, 2 * PAGE);
    return 0;
}

static int check_mmap_zero_length_einval(void)
{
    errno = 0;
    void *p = mmap(NULL, 0, RW, ANON, -1, 0);
    int e = errno;
    if (p != MAP_FAILED || e != EINVAL)
        return bad("mmap of 0 bytes gave %p, errno %d (%s), expected EINVAL", p, e,
                   strerror(e));
    return 0;
}

static int check_map_fixed_over_part(void)
{
    size_t len = 8 * MIB;
    uint8_t *p = map_at_alignment(len, HUGE, 0);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 5);
    size_t off = 3 * MIB + PAGE, part = MIB;
    uint8_t *q = mmap(p + off, part, RW, ANON | MAP_FIXED, -1, 0);
    if (q != p + off)
        return bad("MAP_FIXED at %p gave %p (%s)", (void *)(p + off), (void *)q,
                   strerror(errno));
    long at = nonzero(q, part);
    if (at >= 0)
        return bad("byte %ld of the new mapping is not zero", at);
    at = mismatch(p, off, 5);
    if (at >= 0)
        return bad("byte %ld before the new mapping changed", at);
    size_t after = off + part;
    at = mismatch_from(p + after, len - after, 5, after / 8);
    if (at >= 0)
        return bad("byte %ld after the new mapping changed", (long)after + at);
    fill(q, part, 6);
    at = mismatch(q, part, 6);
    munmap(p, len);
    return at >= 0 ? bad("the new mapping did not keep a write at byte %ld", at) : 0;
}

static int check_map_fixed_noreplace_eexist(void)
{
    size_t len = 4 * MIB;
    uint8_t *p = map_anon(len);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 7);
    errno = 0;
    void *q = mmap(p + MIB, MIB, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);
    int e = errno;
    if (q != MAP_FAILED || e != EEXIST)
        return bad("MAP_FIXED_NOREPLACE over a mapping gave %p, errno %d (%s), "
                   "expected EEXIST",
                   q, e, strerror(e));
    long at = mismatch(p, len, 7);
    munmap(p, len);
    return at >= 0 ? bad("byte %ld of the existing mapping changed", at) : 0;
}

static int check_map_fixed_noreplace_free(void)
{
    size_t len = 4 * MIB;
    uint8_t *p = map_anon(len);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    munmap(p, len);
    uint8_t *q = mmap(p, len, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);
    if (q != p)
        return bad("MAP_FIXED_NOREPLACE on the free range %p gave %p (%s)", (void *)p,
                   (void *)q, strerror(errno));
    long at = nonzero(q, len);
    munmap(q, len);
    return at >= 0 ? bad("byte %ld is not zero", at) : 0;
}

/* ------------------------------------------------------------------------ */
/* mremap */

/* Grows a `len`-byte mapping placed `offset` bytes past a 2 MiB boundary to
 * twice its size. `blocked`: a mapping right after it forces a move
 * (MREMAP_MAYMOVE); else the range after it is free and it must grow in place
 * without MREMAP_MAYMOVE. The last MiB is never touched before the call. */
static int mremap_grow(size_t len, size_t offset, int blocked)
{
    uint8_t *p = map_at_alignment(2 * len, HUGE, offset);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    /* Now [p, p + len) is the mapping and [p + len, p + 2 len) is free. */
    if (munmap(p + len, len) != 0)
        return bad("munmap of the upper half: %s", strerror(errno));
    uint8_t *blocker = NULL;
    if (blocked) {
        blocker = mmap(p + len, PAGE, PROT_READ, ANON | MAP_FIXED, -1, 0);
        if (blocker != p + len)
            return bad("blocker mmap: %s", strerror(errno));
    }
    size_t filled = len - MIB;
    fill(p, filled, 8);

    uint8_t *q = mremap(p, len, 2 * len, blocked ? MREMAP_MAYMOVE : 0);
    if (q == MAP_FAILED)
        return bad("mremap %zu -> %zu bytes: %s", len, 2 * len, strerror(errno));
    if (!blocked && q != p)
        return bad("grew in place to %p, not %p", (void *)q, (void *)p);
    if (blocked && q == p)
        return bad("returned the old address although the next page is mapped");
    long at = mismatch(q, filled, 8);
    if (at >= 0)
        return bad("byte %ld of the pattern differs at %p", at, (void *)q);
    at = nonzero(q + filled, 2 * len - filled);
    if (at >= 0)
        return bad("byte %ld past the pattern is not zero", (long)filled + at);
    fill(q, 2 * len, 9);
    at = mismatch(q, 2 * len, 9);
    if (at >= 0)
        return bad("the grown mapping did not keep a write at byte %ld", at);
    if (blocked) {
        if (!unmapped(p, len))
            return bad("the old range still answers msync after the move");
        if (nonzero(blocker, PAGE) >= 0)
            return bad("the blocking page changed");
        munmap(blocker, PAGE);
    }
    munmap(q, 2 * len);
    return 0;
}

static int check_mremap_grow_in_place_aligned(void)
{
    return mremap_grow(6 * MIB, 0, 0);
}

static int check_mremap_grow_in_place_unaligned(void)
{
    return mremap_grow(6 * MIB + 3 * PAGE, 5 * PAGE, 0);
}

static int check_mremap_move_aligned(void)
{
    return mremap_grow(6 * MIB, 0, 1);
}

static int check_mremap_move_unaligned(void)
{
    return mremap_grow(6 * MIB + 3 * PAGE, 5 * PAGE, 1);
}

static int check_mremap_shrink(void)
{
    size_t len = 8 * MIB, keep = 3 * MIB + PAGE;
    uint8_t *p = map_at_alignment(len, HUGE, 0);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 10);
    uint8_t *q = mremap(p, len, keep, 0);
    if (q != p)
        return bad("shrinking gave %p, not %p (%s)", (void *)q, (void *)p, strerror(errno));
    long at = mismatch(p, keep, 10);
    if (at >= 0)
        return bad("byte %ld of the kept part changed", at);
    if (!unmapped(p + keep, len - keep))
        return bad("the cut-off part still answers msync");
    munmap(p, keep);
    return 0;
}

static int check_mremap_fixed(void)
{
    size_t len = 4 * MIB + 2 * PAGE;
    uint8_t *src = map_anon(len);
    uint8_t *dst = map_at_alignment(len, HUGE, 0);
    if (src == MAP_FAILED || dst == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(src, len, 11);
    fill(dst, len, 12);
    uint8_t *q = mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    if (q != dst)
        return bad("MREMAP_FIXED to %p gave %p (%s)", (void *)dst, (void *)q,
                   strerror(errno));
    long at = mismatch(dst, len, 11);
    if (at >= 0)
        return bad("byte %ld at the new address is not the moved pattern", at);
    if (!unmapped(src, len))
        return bad("the old range still answers msync");
    munmap(dst, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* madvise and mprotect */

static int check_madvise_dontneed_zeroes(void)
{
    size_t len = 8 * MIB;
    uint8_t *p = map_at_alignment(len, HUGE, 0);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 13);
    /* One range inside and across 2 MiB pages, one whole 2 MiB page. */
    size_t ranges[2][2] = {{MIB + 3 * PAGE, 2 * MIB}, {6 * MIB, 2 * MIB}};
    for (int r = 0; r < 2; r++)
        if (madvise(p + ranges[r][0], ranges[r][1], MADV_DONTNEED) != 0)
            return bad("madvise(%zu, %zu): %s", ranges[r][0], ranges[r][1],
                       strerror(errno));
    for (size_t off = 0; off < len; off += PAGE) {
        int dropped = 0;
        for (int r = 0; r < 2; r++)
            dropped |= off >= ranges[r][0] && off < ranges[r][0] + ranges[r][1];
        if (dropped) {
            long at = nonzero(p + off, PAGE);
            if (at >= 0)
                return bad("byte %zu, advised away, reads %u", off + (size_t)at,
                           p[off + (size_t)at]);
        } else {
            long at = mismatch_from(p + off, PAGE, 13, off / 8);
            if (at >= 0)
                return bad("byte %zu, not advised, changed", off + (size_t)at);
        }
    }
    fill(p, len, 14);
    long at = mismatch(p, len, 14);
    munmap(p, len);
    return at >= 0 ? bad("a write after madvise was lost at byte %ld", at) : 0;
}

static int check_mprotect_read_then_write(void)
{
    size_t len = 6 * MIB;
    uint8_t *p = map_at_alignment(len, HUGE, 0);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(p, len, 15);
    if (mprotect(p, len, PROT_READ) != 0)
        return bad("mprotect(PROT_READ): %s", strerror(errno));
    long at = mismatch(p, len, 15);
    if (at >= 0)
        return bad("read-only, byte %ld differs", at);
    /* Part of it back first (splitting a 2 MiB page), then all of it. */
    if (mprotect(p + MIB + PAGE, 2 * PAGE, RW) != 0)
        return bad("mprotect of two pages back to RW: %s", strerror(errno));
    p[MIB + PAGE] ^= 0xFF;
    p[MIB + PAGE] ^= 0xFF;
    if (mprotect(p, len, RW) != 0)
        return bad("mprotect(PROT_READ | PROT_WRITE): %s", strerror(errno));
    at = mismatch(p, len, 15);
    if (at >= 0)
        return bad("back to read-write, byte %ld differs", at);
    fill(p, len, 16);
    at = mismatch(p, len, 16);
    munmap(p, len);
    return at >= 0 ? bad("a write after mprotect was lost at byte %ld", at) : 0;
}

static int check_mprotect_unmapped_enomem(void)
{
    uint8_t *p = map_anon(4 * PAGE);
    if (p == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    munmap(p, 4 * PAGE);
    errno = 0;
    int r = mprotect(p, 4 * PAGE, PROT_READ);
    int e = errno;
    if (r != -1 || e != ENOMEM)
        return bad("mprotect of an unmapped range returned %d, errno %d (%s), "
                   "expected ENOMEM",
                   r, e, strerror(e));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* brk */

static int check_brk_grow_shrink(void)
{
    uint8_t *start = sbrk(0);
    if (start == (void *)-1)
        return bad("sbrk(0): %s", strerror(errno));
    if (sbrk((intptr_t)MIB) != start)
        return bad("sbrk(1 MiB) did not return the old break %p", (void *)start);
    if ((uint8_t *)sbrk(0) != start + MIB)
        return bad("the break did not move by 1 MiB");
    /* The heap need not start page-aligned: fill from the next page. */
    uint8_t *page = (uint8_t *)(((uintptr_t)start + PAGE - 1) & ~(PAGE - 1));
    size_t usable = (size_t)(start + MIB - page);
    fill(page, usable & ~7UL, 17);
    if (sbrk(-(intptr_t)(MIB / 2)) == (void *)-1)
        return bad("sbrk(-512 KiB): %s", strerror(errno));
    if ((uint8_t *)sbrk(0) != start + MIB / 2)
        return bad("the break is %p after shrinking, expected %p", sbrk(0),
                   (void *)(start + MIB / 2));
    size_t kept = (size_t)(start + MIB / 2 - page) & ~(PAGE - 1);
    long at = mismatch(page, kept, 17);
    if (at >= 0)
        return bad("byte %ld below the shrunk break changed", at);
    if (sbrk(-(intptr_t)(MIB / 2)) == (void *)-1 || sbrk(0) != start)
        return bad("could not move the break back to %p", (void *)start);
    return 0;
}

static int check_brk_regrow_zero(void)
{
    uint8_t *start = sbrk(0);
    uint8_t *page = (uint8_t *)(((uintptr_t)start + PAGE - 1) & ~(PAGE - 1));
    if (sbrk((intptr_t)(2 * MIB)) != start)
        return bad("sbrk(2 MiB): %s", strerror(errno));
    memset(page, 0xA5, MIB);
    if (sbrk(-(intptr_t)(2 * MIB)) == (void *)-1)
        return bad("sbrk(-2 MiB): %s", strerror(errno));
    if (sbrk(0) != start)
        return bad("the break is %p after shrinking by 2 MiB, expected %p", sbrk(0),
                   (void *)start);
    void *again = sbrk((intptr_t)(2 * MIB));
    if (again != start)
        return bad("sbrk(2 MiB) again returned %p, expected %p", again, (void *)start);
    long at = nonzero(page, MIB);
    sbrk(-(intptr_t)(2 * MIB));
    return at >= 0 ? bad("byte %ld of the regrown heap is not zero", at) : 0;
}

/* ------------------------------------------------------------------------ */
/* File and device mappings */

/* The mapped file's contents read with read(2), its size in *len. */
static uint8_t *read_whole(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}

static int check_mmap_file_read_only(void)
{
    size_t len;
    uint8_t *want = read_whole(mapped_path, &len);
    if (!want)
        return bad("cannot read %s: %s", mapped_path, strerror(errno));
    if (len < 2 * PAGE || len % PAGE == 0)
        return bad("%s is %zu bytes: want at least two pages and a partial one",
                   mapped_path, len);
    int fd = open(mapped_path, O_RDONLY);
    if (fd < 0)
        return bad("open %s: %s", mapped_path, strerror(errno));
    uint8_t *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return bad("mmap of %s: %s", mapped_path, strerror(errno));
    for (size_t i = 0; i < len; i++)
        if (p[i] != want[i])
            return bad("byte %zu is %u in the mapping, %u by read(2)", i, p[i], want[i]);
    /* The rest of the last page reads as zeros. */
    size_t tail = PAGE - len % PAGE;
    long at = nonzero(p + len, tail);
    if (at >= 0)
        return bad("byte %zu, past the end of the file, is %u", len + (size_t)at,
                   p[len + (size_t)at]);
    munmap(p, len);
    free(want);
    return 0;
}

static int check_mmap_file_offset(void)
{
    size_t len;
    uint8_t *want = read_whole(mapped_path, &len);
    if (!want)
        return bad("cannot read %s: %s", mapped_path, strerror(errno));
    int fd = open(mapped_path, O_RDONLY);
    if (fd < 0)
        return bad("open %s: %s", mapped_path, strerror(errno));
    uint8_t *p = mmap(NULL, len - PAGE, PROT_READ, MAP_PRIVATE, fd, PAGE);
    close(fd);
    if (p == MAP_FAILED)
        return bad("mmap at offset 4096: %s", strerror(errno));
    int same = memcmp(p, want + PAGE, len - PAGE) == 0;
    munmap(p, len - PAGE);
    free(want);
    return same ? 0 : bad("the mapping at offset 4096 differs from read(2)");
}

static int check_mmap_file_private_write(void)
{
    size_t len;
    uint8_t *want = read_whole(mapped_path, &len);
    if (!want)
        return bad("cannot read %s: %s", mapped_path, strerror(errno));
    int fd = open(mapped_path, O_RDONLY);
    if (fd < 0)
        return bad("open %s: %s", mapped_path, strerror(errno));
    uint8_t *ro = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *p = mmap(NULL, len, RW, MAP_PRIVATE, fd, 0);
    if (ro == MAP_FAILED || p == MAP_FAILED)
        return bad("mmap of %s: %s", mapped_path, strerror(errno));
    if (memcmp(p, want, len) != 0)
        return bad("the writable mapping differs from read(2) before any write");
    for (size_t i = 0; i < len; i += 97)
        p[i] = (uint8_t)~want[i];
    for (size_t i = 0; i < len; i++) {
        uint8_t expect = i % 97 == 0 ? (uint8_t)~want[i] : want[i];
        if (p[i] != expect)
            return bad("byte %zu of the written mapping is %u, expected %u", i, p[i], expect);
    }
    if (memcmp(ro, want, len) != 0)
        return bad("writing one private mapping changed another mapping of the file");
    uint8_t *again = malloc(len);
    ssize_t n = pread(fd, again, len, 0);
    close(fd);
    if (n != (ssize_t)len)
        return bad("pread after the writes returned %zd", n);
    if (memcmp(again, want, len) != 0)
        return bad("writing a private mapping changed what read(2) returns");
    munmap(p, len);
    munmap(ro, len);
    free(again);
    free(want);
    return 0;
}

static int check_mmap_dev_zero(void)
{
    int fd = open("/dev/zero", O_RDWR);
    if (fd < 0)
        return bad("open /dev/zero: %s", strerror(errno));
    size_t len = 3 * MIB;
    uint8_t *p = mmap(NULL, len, RW, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return bad("mmap of /dev/zero: %s", strerror(errno));
    long at = nonzero(p, len);
    if (at >= 0)
        return bad("byte %ld is not zero", at);
    fill(p, len, 18);
    at = mismatch(p, len, 18);
    munmap(p, len);
    return at >= 0 ? bad("a write was lost at byte %ld", at) : 0;
}

/* read(2) of a packaged file straight into pages the app never touched, whose
 * frames an earlier mapping used and gave back: the kernel fills them in while
 * it copies. */
static int check_read_into_reused_pages(void)
{
    size_t used = MIB;
    uint8_t *old = map_anon(used);
    if (old == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    fill(old, used, 19);
    munmap(old, used);

    int fd = open(mapped_path, O_RDONLY);
    if (fd < 0)
        return bad("open %s: %s", mapped_path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0)
        return bad("fstat: %s", strerror(errno));
    size_t len = (size_t)st.st_size;
    uint8_t *want = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *buf = map_anon(16 * PAGE + len);
    if (want == MAP_FAILED || buf == MAP_FAILED)
        return bad("mmap: %s", strerror(errno));
    ssize_t n = read(fd, buf, len);
    if (n != (ssize_t)len)
        return bad_errno("read of the whole file into fresh pages", n);
    /* Again at an offset within a page, so the copy starts mid-page. */
    n = pread(fd, buf + 8 * PAGE + 123, len, 0);
    close(fd);
    if (n != (ssize_t)len)
        return bad_errno("pread of the whole file into fresh pages", n);
    if (memcmp(buf, want, len) != 0 || memcmp(buf + 8 * PAGE + 123, want, len) != 0)
        return bad("the bytes read differ from the file's mapping");
    munmap(want, len);
    munmap(buf, 16 * PAGE + len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* malloc */

static int check_malloc_1g_reuse(void)
{
    size_t len = GIB;
    uint8_t *a = malloc(len);
    if (!a)
        return bad("the first malloc(1 GiB) failed");
    memset(a, 0x5A, len);
    if (a[len - 1] != 0x5A)
        return bad("the first allocation lost a write");
    free(a);
    /* Both allocations fit only if the first one's memory came back. */
    uint8_t *b = calloc(1, len);
    if (!b)
        return bad("calloc(1 GiB) after free failed");
    long at = nonzero(b, len);
    if (at >= 0)
        return bad("byte %ld of calloc's memory is %u", at, b[at]);
    memset(b, 0xA5, len);
    if (b[0] != 0xA5 || b[len - 1] != 0xA5)
        return bad("the second allocation lost a write");
    free(b);
    return 0;
}

/* ------------------------------------------------------------------------ */

static int lazy(const char *arg)
{
    char *end;
    unsigned long mib = strtoul(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || mib > 16 * 1024) {
        fprintf(stderr, "memory: lazy wants a MiB count up to 16384, not %s\n", arg);
        return 2;
    }
    size_t len = 16 * GIB;
    volatile uint8_t *p = mmap(NULL, len, RW, ANON | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "memory: mmap of 16 GiB: %s\n", strerror(errno));
        return 1;
    }
    size_t touched = mib * MIB;
    for (size_t off = 0; off < touched; off += PAGE)
        p[off] = (uint8_t)((off >> 12) | 1);
    for (size_t off = 0; off < touched; off += PAGE) {
        if (p[off] != (uint8_t)((off >> 12) | 1)) {
            fprintf(stderr, "memory: byte %zu lost its write\n", off);
            return 1;
        }
    }
    printf("touched %lu MiB of 16 GiB\n", mib);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "lazy") == 0)
        return lazy(argv[2]);
    if (argc != 3 || strcmp(argv[1], "checks") != 0) {
        fprintf(stderr, "usage: memory lazy N | memory checks FILE\n");
        return 2;
    }
    mapped_path = argv[2];

    /* Each check is independent of the others. The file mappings come before
     * the checks that free memory, and the read into reused pages comes last:
     * where it goes wrong it can stop the whole run, and then it hides no other
     * check. */
    run_check("mmap_file_read_only", check_mmap_file_read_only);
    run_check("mmap_file_offset", check_mmap_file_offset);
    run_check("mmap_file_private_write", check_mmap_file_private_write);
    run_check("mmap_dev_zero", check_mmap_dev_zero);
    run_check("mmap_anon_zero", check_anon_zero);
    run_check("mmap_zero_length_einval", check_mmap_zero_length_einval);
    run_check("munmap_keeps_other_mapping", check_munmap_keeps_other_mapping);
    run_check("munmap_middle_keeps_edges", check_munmap_middle_keeps_edges);
    run_check("munmap_untouched_edge", check_munmap_untouched_edge);
    run_check("munmap_unaligned_einval", check_munmap_unaligned_einval);
    run_check("map_fixed_over_part", check_map_fixed_over_part);
    run_check("map_fixed_noreplace_eexist", check_map_fixed_noreplace_eexist);
    run_check("map_fixed_noreplace_free", check_map_fixed_noreplace_free);
    run_check("mremap_grow_in_place_aligned", check_mremap_grow_in_place_aligned);
    run_check("mremap_grow_in_place_unaligned", check_mremap_grow_in_place_unaligned);
    run_check("mremap_move_aligned", check_mremap_move_aligned);
    run_check("mremap_move_unaligned", check_mremap_move_unaligned);
    run_check("mremap_shrink", check_mremap_shrink);
    run_check("mremap_fixed", check_mremap_fixed);
    run_check("madvise_dontneed_zeroes", check_madvise_dontneed_zeroes);
    run_check("mprotect_read_then_write", check_mprotect_read_then_write);
    run_check("mprotect_untouched_edge", check_mprotect_untouched_edge);
    run_check("mprotect_unmapped_enomem", check_mprotect_unmapped_enomem);
    run_check("brk_grow_shrink", check_brk_grow_shrink);
    run_check("brk_regrow_zero", check_brk_regrow_zero);
    run_check("malloc_1g_reuse", check_malloc_1g_reuse);
    run_check("read_into_reused_pages", check_read_into_reused_pages);
    return failures == 0 ? 0 : 1;
}
