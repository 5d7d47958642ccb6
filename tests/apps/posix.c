/*
 * POSIX conformance checks, for nacre's tests: files, descriptors, the
 * working directory, /proc/self and /dev, the console, clocks, identity,
 * limits, signals and membarrier, as a static program sees them on Linux.
 *
 * Build: gcc -static -O2 posix.c -o posix
 * Usage: posix DIR
 *            DIR is an absolute path without symbolic links holding exactly:
 *              hello.txt     "hello, nacre\n", mode 0644
 *              private.txt   "owner and group\n", mode 0640
 *              sub/two.txt   "two\n", mode 0644
 *            stdin must hold STDIN_TEXT (below) and be a pipe, not a
 *            terminal; the working directory must be "/".
 *            Runs every check in order, printing one line per check:
 *            "ok <name>", "FAIL <name>: <detail>" or, natively,
 *            "skip <name>"; the writev check also prints WRITEV_LINE.
 *            Exit code 0 when no check failed, else 1; 2 for a usage error.
 *
 * Under nacre, DIR is packaged read-only and the checks also expect what
 * nacre promises: the app at /app/<argv[0]>, pid 1, uid 0, one CPU and
 * ENOSYS for socketpair, which nacre does not implement yet (changes to the
 * tree are tmpfs.c's, sockets sockets.c's). With NACRE_NATIVE=1
 * in the environment those checks print "skip <name>" and the rest run
 * against the host's kernel.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* What the test feeds on stdin and what the writev check prints. */
#define STDIN_TEXT "stdin for the poll check\n"
#define WRITEV_LINE "writev: first second third"

#define HELLO "hello, nacre\n"
#define PRIVATE "owner and group\n"
#define TWO "two\n"

/* ------------------------------------------------------------------------ */
/* Reporting */

static int failures;
static char detail[512];
/* DIR (argv[1]), argv[0], and whether nacre's own promises are skipped. */
static const char *dir;
static const char *argv0;
static int native;

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
static int bad_call(const char *what, long r, int err)
{
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

/* A check of something nacre promises beyond Linux, or that only holds on a
 * read-only tree: skipped natively. */
static void run_nacre_check(const char *name, int (*check)(void))
{
    if (native)
        printf("skip %s\n", name);
    else
        run_check(name, check);
}

/* ------------------------------------------------------------------------ */
/* Paths, reads and clocks */

/* DIR/rel, in a static buffer (one at a time). */
static const char *in_dir(const char *rel)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return path;
}

/* Expects `call` to have returned -1 with errno `want`. */
static int expect_errno(const char *what, long r, int err, int want)
{
    if (r == -1 && err == want)
        return 0;
    return bad("%s returned %ld, errno %d (%s), expected %s", what, r, err, strerror(err),
               strerror(want));
}

/* Reads up to `len` bytes from `fd`, looping over short reads. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0)
            return got ? (ssize_t)got : -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Whether the file `fd` reads exactly `want` from its current offset on. */
static int reads_exactly(int fd, const char *want)
{
    char buf[256];
    ssize_t n = read_full(fd, buf, sizeof buf);
    return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long now_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return ns_of(&t);
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* ------------------------------------------------------------------------ */
/* Files and descriptors */

static int check_open_read_close(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open hello.txt", fd, errno);
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n != (ssize_t)strlen(HELLO) || memcmp(buf, HELLO, (size_t)n) != 0)
        return bad("read returned %zd bytes, not the file's %zu", n, strlen(HELLO));
    n = read(fd, buf, sizeof buf);
    if (n != 0)
        return bad("read at the end of the file returned %zd", n);
    if (close(fd) != 0)
        return bad_call("close", -1, errno);
    errno = 0;
    n = read(fd, buf, 1);
    return expect_errno("read of the closed fd", n, errno, EBADF);
}

static int check_dup_shares_offset(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    int copy = dup(fd);
    if (copy < 0 || copy == fd)
        return bad_call("dup", copy, errno);
    char buf[5];
    if (read(fd, buf, 5) != 5)
        return bad("read of 5 bytes failed");
    if (!reads_exactly(copy, HELLO + 5))
        return bad("the duplicate does not continue at offset 5");
    close(fd);
    close(copy);
    return 0;
}

static int check_dup2_onto_open_fd(void)
{
    int a = open(in_dir("hello.txt"), O_RDONLY);
    int b = open(in_dir("sub/two.txt"), O_RDONLY);
    if (a < 0 || b < 0)
        return bad("open: %s", strerror(errno));
    int r = dup2(a, b);
    if (r != b)
        return bad_call("dup2 onto an open fd", r, errno);
    if (!reads_exactly(b, HELLO))
        return bad("after dup2, the target fd does not read hello.txt");
    r = dup2(a, a);
    if (r != a)
        return bad_call("dup2 of an fd onto itself", r, errno);
    close(a);
    close(b);
    return 0;
}

static int check_dup3_cloexec(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    int flags = fcntl(fd, F_GETFD);
    if (flags != 0)
        return bad("F_GETFD of a plain open gave %d, expected 0", flags);
    int target = fd + 7;
    int r = dup3(fd, target, O_CLOEXEC);
    if (r != target)
        return bad_call("dup3(O_CLOEXEC)", r, errno);
    flags = fcntl(target, F_GETFD);
    if (flags != FD_CLOEXEC)
        return bad("F_GETFD after dup3(O_CLOEXEC) gave %d, expected FD_CLOEXEC", flags);
    if (fcntl(target, F_SETFD, 0) != 0 || fcntl(target, F_GETFD) != 0)
        return bad("F_SETFD 0 did not clear FD_CLOEXEC");
    errno = 0;
    r = dup3(fd, fd, 0);
    int err = expect_errno("dup3 of an fd onto itself", r, errno, EINVAL);
    close(fd);
    close(target);
    return err;
}

static int check_fcntl_dupfd_minimum(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    int copy = fcntl(fd, F_DUPFD, 100);
    if (copy < 100)
        return bad_call("fcntl(F_DUPFD, 100)", copy, errno);
    int copy2 = fcntl(fd, F_DUPFD_CLOEXEC, 100);
    if (copy2 <= copy)
        return bad_call("fcntl(F_DUPFD_CLOEXEC, 100) with 100 taken", copy2, errno);
    if (fcntl(copy2, F_GETFD) != FD_CLOEXEC)
        return bad("F_DUPFD_CLOEXEC's descriptor has no FD_CLOEXEC");
    if (!reads_exactly(copy, HELLO))
        return bad("the F_DUPFD copy does not read hello.txt");
    close(fd);
    close(copy);
    close(copy2);
    return 0;
}

static int check_fcntl_getfl_access_mode(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    int fl = fcntl(fd, F_GETFL);
    close(fd);
    if (fl < 0)
        return bad_call("F_GETFL", fl, errno);
    if ((fl & O_ACCMODE) != O_RDONLY)
        return bad("F_GETFL gave 0%o: access mode %d, expected O_RDONLY", fl, fl & O_ACCMODE);
    fd = open("/dev/null", O_WRONLY | O_APPEND);
    if (fd < 0)
        return bad_call("open /dev/null O_WRONLY", fd, errno);
    fl = fcntl(fd, F_GETFL);
    close(fd);
    if (fl < 0 || (fl & O_ACCMODE) != O_WRONLY || !(fl & O_APPEND))
        return bad("F_GETFL of /dev/null O_WRONLY|O_APPEND gave 0%o", fl);
    return 0;
}

static int check_lseek(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    char c;
    off_t r = lseek(fd, 7, SEEK_SET);
    if (r != 7 || read(fd, &c, 1) != 1 || c != HELLO[7])
        return bad("SEEK_SET 7 gave %lld, then read '%c'", (long long)r, c);
    r = lseek(fd, -3, SEEK_CUR);
    if (r != 5 || read(fd, &c, 1) != 1 || c != HELLO[5])
        return bad("SEEK_CUR -3 gave %lld, then read '%c'", (long long)r, c);
    r = lseek(fd, -2, SEEK_END);
    if (r != (off_t)strlen(HELLO) - 2 || !reads_exactly(fd, HELLO + strlen(HELLO) - 2))
        return bad("SEEK_END -2 gave %lld", (long long)r);
    r = lseek(fd, 100, SEEK_SET);
    if (r != 100 || read(fd, &c, 1) != 0)
        return bad("a read past the end after SEEK_SET 100 did not return 0");
    errno = 0;
    r = lseek(fd, -1, SEEK_SET);
    int err = expect_errno("SEEK_SET -1", (long)r, errno, EINVAL);
    close(fd);
    return err;
}

static int check_pread_keeps_offset(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    char buf[8];
    if (read(fd, buf, 2) != 2)
        return bad("read of 2 bytes failed");
    ssize_t n = pread(fd, buf, 5, 7);
    if (n != 5 || memcmp(buf, HELLO + 7, 5) != 0)
        return bad("pread(5 bytes at 7) returned %zd", n);
    off_t at = lseek(fd, 0, SEEK_CUR);
    if (at != 2)
        return bad("the offset is %lld after pread, expected 2", (long long)at);
    if (!reads_exactly(fd, HELLO + 2))
        return bad("read after pread did not continue at offset 2");
    close(fd);
    return 0;
}

static int check_readv_two_buffers(void)
{
    int fd = open(in_dir("hello.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open", fd, errno);
    char a[5], b[32];
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    ssize_t n = readv(fd, iov, 2);
    close(fd);
    size_t len = strlen(HELLO);
    if (n != (ssize_t)len)
        return bad("readv returned %zd, expected %zu", n, len);
    if (memcmp(a, HELLO, 5) != 0 || memcmp(b, HELLO + 5, len - 5) != 0)
        return bad("readv split the file wrongly");
    return 0;
}

/* Checks a stat of a regular file: size, type and permission bits. */
static int expect_regular(const char *what, const struct stat *st, off_t size, mode_t perms)
{
    if (!S_ISREG(st->st_mode))
        return bad("%s: mode 0%o is not a regular file", what, st->st_mode);
    if ((st->st_mode & 07777) != perms)
        return bad("%s: permissions 0%o, expected 0%o", what, st->st_mode & 07777, perms);
    if (st->st_size != size)
        return bad("%s: size %lld, expected %lld", what, (long long)st->st_size,
                   (long long)size);
    return 0;
}

static int check_fstat(void)
{
    int fd = open(in_dir("private.txt"), O_RDONLY);
    if (fd < 0)
        return bad_call("open private.txt", fd, errno);
    struct stat st;
    int r = fstat(fd, &st);
    close(fd);
    if (r != 0)
        return bad_call("fstat", r, errno);
    return expect_regular("fstat private.txt", &st, (off_t)strlen(PRIVATE), 0640);
}

static int check_stat_and_lstat(void)
{
    struct stat st;
    int r = stat(in_dir("hello.txt"), &st);
    if (r != 0)
        return bad_call("stat hello.txt", r, errno);
    if (expect_regular("stat hello.txt", &st, (off_t)strlen(HELLO), 0644) != 0)
        return -1;
    r = lstat(in_dir("private.txt"), &st);
    if (r != 0)
        return bad_call("lstat private.txt", r, errno);
    if (expect_regular("lstat private.txt", &st, (off_t)strlen(PRIVATE), 0640) != 0)
        return -1;
    r = stat(dir, &st);
    if (r != 0)
        return bad_call("stat DIR", r, errno);
    if (!S_ISDIR(st.st_mode))
        return bad("stat DIR: mode 0%o is not a directory", st.st_mode);
    r = stat(in_dir("sub"), &st);
    if (r != 0 || !S_ISDIR(st.st_mode))
        return bad("stat DIR/sub: %d, mode 0%o", r, st.st_mode);
    return 0;
}

static int check_fstatat(void)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0)
        return bad_call("open DIR O_DIRECTORY", dfd, errno);
    struct stat st;
    int r = fstatat(dfd, "sub/two.txt", &st, 0);
    if (r != 0)
        return bad_call("fstatat sub/two.txt", r, errno);
    if (expect_regular("fstatat sub/two.txt", &st, (off_t)strlen(TWO), 0644) != 0)
        return -1;
    r = fstatat(dfd, "sub", &st, AT_SYMLINK_NOFOLLOW);
    if (r != 0 || !S_ISDIR(st.st_mode))
        return bad("fstatat sub: %d, mode 0%o", r, st.st_mode);
    r = fstatat(dfd, "", &st, AT_EMPTY_PATH);
    if (r != 0 || !S_ISDIR(st.st_mode))
        return bad("fstatat(AT_EMPTY_PATH) of DIR: %d, mode 0%o", r, st.st_mode);
    close(dfd);
    return 0;
}

static int check_statx(void)
{
    struct statx sx;
    int r = statx(AT_FDCWD, in_dir("private.txt"), 0, STATX_BASIC_STATS, &sx);
    if (r != 0)
        return bad_call("statx private.txt", r, errno);
    unsigned want = STATX_TYPE | STATX_MODE | STATX_SIZE;
    if ((sx.stx_mask & want) != want)
        return bad("stx_mask 0x%x lacks type, mode or size", sx.stx_mask);
    if (!S_ISREG(sx.stx_mode) || (sx.stx_mode & 07777) != 0640)
        return bad("stx_mode 0%o, expected a regular file with 0640", sx.stx_mode);
    if (sx.stx_size != strlen(PRIVATE))
        return bad("stx_size %llu, expected %zu", (unsigned long long)sx.stx_size,
                   strlen(PRIVATE));
    r = statx(AT_FDCWD, in_dir("sub"), 0, STATX_BASIC_STATS, &sx);
    if (r != 0 || !S_ISDIR(sx.stx_mode))
        return bad("statx sub: %d, stx_mode 0%o", r, sx.stx_mode);
    return 0;
}

static int check_readdir(void)
{
    static const char *const want[] = {".", "..", "hello.txt", "private.txt", "sub"};
    const size_t count = sizeof want / sizeof want[0];
    int seen[sizeof want / sizeof want[0]] = {0};
    DIR *d = opendir(dir);
    if (!d)
        return bad("opendir: %s", strerror(errno));
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        size_t i = 0;
        while (i < count && strcmp(e->d_name, want[i]) != 0)
            i++;
        if (i == count) {
            closedir(d);
            return bad("unexpected entry \"%s\"", e->d_name);
        }
        if (seen[i]++) {
            closedir(d);
            return bad("\"%s\" listed twice", e->d_name);
        }
        int is_dir = i < 2 || strcmp(want[i], "sub") == 0;
        if (e->d_type != DT_UNKNOWN && (e->d_type == DT_DIR) != is_dir) {
            closedir(d);
            return bad("\"%s\" has d_type %u", e->d_name, e->d_type);
        }
    }
    int err = errno;
    closedir(d);
    if (err != 0)
        return bad("readdir: %s", strerror(err));
    for (size_t i = 0; i < count; i++)
        if (!seen[i])
            return bad("\"%s\" is not listed", want[i]);
    return 0;
}

static int check_access_read(void)
{
    int r = access(in_dir("hello.txt"), R_OK);
    if (r != 0)
        return bad_call("access(R_OK)", r, errno);
    r = access(dir, R_OK | X_OK);
    if (r != 0)
        return bad_call("access(DIR, R_OK | X_OK)", r, errno);
    errno = 0;
    r = access(in_dir("missing"), F_OK);
    return expect_errno("access of a missing file", r, errno, ENOENT);
}

static int check_open_missing_enoent(void)
{
    errno = 0;
    int fd = open(in_dir("missing.txt"), O_RDONLY);
    if (expect_errno("open of a missing file", fd, errno, ENOENT) != 0)
        return -1;
    errno = 0;
    fd = open(in_dir("missing/two.txt"), O_RDONLY);
    return expect_errno("open below a missing directory", fd, errno, ENOENT);
}

static int check_open_trailing_slash_enotdir(void)
{
    errno = 0;
    int fd = open(in_dir("hello.txt/"), O_RDONLY);
    if (expect_errno("open of \"hello.txt/\"", fd, errno, ENOTDIR) != 0)
        return -1;
    errno = 0;
    fd = open(in_dir("hello.txt"), O_RDONLY | O_DIRECTORY);
    return expect_errno("open(O_DIRECTORY) of a file", fd, errno, ENOTDIR);
}

static int check_read_directory_eisdir(void)
{
    int fd = open(dir, O_RDONLY);
    if (fd < 0)
        return bad_call("open DIR", fd, errno);
    char c;
    errno = 0;
    ssize_t n = read(fd, &c, 1);
    close(fd);
    return expect_errno("read of a directory", n, errno, EISDIR);
}

/* ------------------------------------------------------------------------ */
/* The working directory */

static int expect_cwd(const char *want)
{
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf))
        return bad("getcwd: %s", strerror(errno));
    if (strcmp(buf, want) != 0)
        return bad("getcwd is \"%s\", expected \"%s\"", buf, want);
    return 0;
}

static int check_getcwd_at_start(void)
{
    if (expect_cwd("/") != 0)
        return -1;
    char small[1];
    errno = 0;
    char *r = getcwd(small, sizeof small);
    return expect_errno("getcwd into 1 byte", r ? 0 : -1, errno, ERANGE);
}

static int check_chdir_relative_open(void)
{
    int r = chdir(dir);
    if (r != 0)
        return bad_call("chdir DIR", r, errno);
    int err = expect_cwd(dir);
    if (err == 0) {
        int fd = open("hello.txt", O_RDONLY);
        if (fd < 0)
            err = bad_call("open of the relative \"hello.txt\"", fd, errno);
        else if (!reads_exactly(fd, HELLO))
            err = bad("the relative \"hello.txt\" does not read as hello.txt");
        if (fd >= 0)
            close(fd);
    }
    if (err == 0) {
        int fd = open("./sub/../sub/two.txt", O_RDONLY);
        if (fd < 0)
            err = bad_call("open of \"./sub/../sub/two.txt\"", fd, errno);
        else if (!reads_exactly(fd, TWO))
            err = bad("\"./sub/../sub/two.txt\" does not read as sub/two.txt");
        if (fd >= 0)
            close(fd);
    }
    if (chdir("/") != 0)
        return bad("chdir back to /: %s", strerror(errno));
    return err;
}

static int check_fchdir(void)
{
    int fd = open(in_dir("sub"), O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return bad_call("open DIR/sub", fd, errno);
    int r = fchdir(fd);
    close(fd);
    if (r != 0)
        return bad_call("fchdir", r, errno);
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/sub", dir);
    int err = expect_cwd(want);
    if (err == 0) {
        int two = open("two.txt", O_RDONLY);
        if (two < 0)
            err = bad_call("open of the relative \"two.txt\"", two, errno);
        else if (!reads_exactly(two, TWO))
            err = bad("the relative \"two.txt\" does not read as sub/two.txt");
        if (two >= 0)
            close(two);
    }
    if (chdir("/") != 0)
        return bad("chdir back to /: %s", strerror(errno));
    return err;
}

/* ------------------------------------------------------------------------ */
/* /proc/self */

static int check_proc_self_exe_link(void)
{
    char want[PATH_MAX];
    if (native) {
        /* The kernel shows the executable's canonical path. */
        if (!realpath("/proc/self/exe", want))
            return bad("realpath /proc/self/exe: %s", strerror(errno));
        if (strcmp(base_name(want), base_name(argv0)) != 0)
            return bad("/proc/self/exe is \"%s\", not named like argv[0] \"%s\"", want,
                       argv0);
    } else {
        snprintf(want, sizeof want, "/app/%s", base_name(argv0));
    }
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0)
        return bad_call("readlink /proc/self/exe", n, errno);
    buf[n] = '\0';
    if (strcmp(buf, want) != 0)
        return bad("readlink /proc/self/exe gave \"%s\", expected \"%s\"", buf, want);
    struct stat st;
    int r = lstat("/proc/self/exe", &st);
    if (r != 0 || !S_ISLNK(st.st_mode))
        return bad("lstat /proc/self/exe: %d, mode 0%o, expected a symbolic link", r,
                   st.st_mode);
    return 0;
}

static int check_proc_self_exe_is_elf(void)
{
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0)
        return bad_call("open /proc/self/exe", fd, errno);
    unsigned char head[4];
    ssize_t n = read_full(fd, head, sizeof head);
    close(fd);
    if (n != 4 || memcmp(head, "\x7f" "ELF", 4) != 0)
        return bad("the first %zd bytes are not \\x7fELF", n);
    return 0;
}

static int check_proc_self_maps_stack(void)
{
    int local = 0;
    uintptr_t here = (uintptr_t)&local;
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0)
        return bad_call("open /proc/self/maps", fd, errno);
    static char maps[256 * 1024];
    ssize_t n = read_full(fd, maps, sizeof maps - 1);
    close(fd);
    if (n <= 0)
        return bad("reading /proc/self/maps gave %zd", n);
    maps[n] = '\0';
    int stacks = 0;
    for (char *line = maps; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strstr(line, "[stack]")) {
            unsigned long start, end;
            if (sscanf(line, "%lx-%lx", &start, &end) != 2)
                return bad("cannot parse \"%s\"", line);
            stacks++;
            if (here < start || here >= end)
                return bad("a local variable at %#lx is outside [stack] %#lx-%#lx",
                           (unsigned long)here, start, end);
        }
        line = next;
    }
    if (stacks != 1)
        return bad("%d [stack] lines", stacks);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* /dev */

static int check_dev_null(void)
{
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0)
        return bad_call("open /dev/null", fd, errno);
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n != 0)
        return bad("read of /dev/null returned %zd, expected 0", n);
    n = write(fd, "discarded", 9);
    close(fd);
    if (n != 9)
        return bad("write of 9 bytes to /dev/null returned %zd", n);
    return 0;
}

static int check_dev_zero(void)
{
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0)
        return bad_call("open /dev/zero", fd, errno);
    static unsigned char buf[64 * 1024];
    size_t sizes[2] = {100, sizeof buf};
    for (int i = 0; i < 2; i++) {
        memset(buf, 0xFF, sizeof buf);
        ssize_t n = read(fd, buf, sizes[i]);
        if (n != (ssize_t)sizes[i])
            return bad("read of %zu bytes returned %zd", sizes[i], n);
        for (size_t j = 0; j < sizes[i]; j++)
            if (buf[j] != 0)
                return bad("byte %zu of a %zu-byte read is %u", j, sizes[i], buf[j]);
        if (sizes[i] < sizeof buf && buf[sizes[i]] != 0xFF)
            return bad("a %zu-byte read wrote past its end", sizes[i]);
    }
    close(fd);
    return 0;
}

static int check_dev_urandom(void)
{
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0)
        return bad_call("open /dev/urandom", fd, errno);
    unsigned char a[32], b[32], zero[32] = {0};
    ssize_t na = read(fd, a, sizeof a), nb = read(fd, b, sizeof b);
    close(fd);
    if (na != 32 || nb != 32)
        return bad("reads of 32 bytes returned %zd and %zd", na, nb);
    if (memcmp(a, b, 32) == 0)
        return bad("two reads gave the same bytes");
    if (memcmp(a, zero, 32) == 0 || memcmp(b, zero, 32) == 0)
        return bad("a read gave 32 zero bytes");
    return 0;
}

static int check_getrandom(void)
{
    unsigned char a[64], b[64];
    ssize_t na = getrandom(a, sizeof a, 0), nb = getrandom(b, sizeof b, GRND_NONBLOCK);
    if (na != 64 || nb != 64)
        return bad("getrandom of 64 bytes returned %zd and %zd", na, nb);
    if (memcmp(a, b, sizeof a) == 0)
        return bad("two calls gave the same bytes");
    errno = 0;
    ssize_t r = getrandom(a, sizeof a, 0x100);
    return expect_errno("getrandom with an unknown flag", r, errno, EINVAL);
}

/* ------------------------------------------------------------------------ */
/* The console */

static int check_isatty_stdin(void)
{
    errno = 0;
    int r = isatty(0);
    if (r != 0)
        return bad("isatty(0) is %d for a pipe", r);
    if (errno != ENOTTY)
        return bad("isatty(0) set errno %d (%s), expected ENOTTY", errno, strerror(errno));
    return 0;
}

static int check_tiocgwinsz_enotty(void)
{
    struct winsize ws;
    errno = 0;
    int r = ioctl(0, TIOCGWINSZ, &ws);
    return expect_errno("ioctl(0, TIOCGWINSZ)", r, errno, ENOTTY);
}

static int check_write_zero_bytes(void)
{
    fflush(stdout);
    ssize_t n = write(1, "", 0);
    if (n != 0)
        return bad_call("write(1, \"\", 0)", n, errno);
    return 0;
}

static int check_writev_stdout(void)
{
    static char a[] = "writev: first", b[] = " second", c[] = " third\n";
    struct iovec iov[3] = {{a, strlen(a)}, {b, strlen(b)}, {c, strlen(c)}};
    fflush(stdout);
    ssize_t n = writev(1, iov, 3);
    size_t want = strlen(a) + strlen(b) + strlen(c);
    if (n != (ssize_t)want)
        return bad("writev returned %zd, expected %zu", n, want);
    return 0;
}

static int check_poll_stdin(void)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int r = poll(&p, 1, 10000);
    if (r != 1)
        return bad_call("poll(stdin, 10 s)", r, errno);
    if (!(p.revents & POLLIN))
        return bad("poll reported revents 0x%x without POLLIN", p.revents);
    char buf[sizeof STDIN_TEXT];
    size_t want = strlen(STDIN_TEXT), got = 0;
    while (got < want) {
        ssize_t n = read(0, buf + got, want - got);
        if (n <= 0)
            return bad("read of stdin returned %zd after %zu bytes", n, got);
        got += (size_t)n;
    }
    if (memcmp(buf, STDIN_TEXT, want) != 0)
        return bad("stdin held \"%.*s\"", (int)got, buf);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Clocks */

static int check_clock_monotonic_steps(void)
{
    struct timespec prev, cur;
    if (clock_gettime(CLOCK_MONOTONIC, &prev) != 0)
        return bad_call("clock_gettime", -1, errno);
    for (int i = 0; i < 10000; i++) {
        if (clock_gettime(CLOCK_MONOTONIC, &cur) != 0)
            return bad_call("clock_gettime", -1, errno);
        if (cur.tv_nsec < 0 || cur.tv_nsec >= 1000000000L)
            return bad("tv_nsec %ld out of range", cur.tv_nsec);
        if (ns_of(&cur) < ns_of(&prev))
            return bad("call %d went back from %lld to %lld ns", i, ns_of(&prev),
                       ns_of(&cur));
        prev = cur;
    }
    return 0;
}

static int check_clock_realtime_after_2020(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0)
        return bad_call("clock_gettime(CLOCK_REALTIME)", -1, errno);
    /* 2020-01-01T00:00:00Z */
    if (t.tv_sec < 1577836800)
        return bad("CLOCK_REALTIME is %lld s, before 2020", (long long)t.tv_sec);
    return 0;
}

static int check_gettimeofday_matches_realtime(void)
{
    struct timeval tv;
    struct timespec ts;
    if (gettimeofday(&tv, NULL) != 0 || clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return bad("gettimeofday or clock_gettime failed: %s", strerror(errno));
    if (tv.tv_usec < 0 || tv.tv_usec >= 1000000)
        return bad("tv_usec %ld out of range", (long)tv.tv_usec);
    long long diff = ns_of(&ts) - ((long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL);
    if (diff < 0 || diff > 1000000000LL)
        return bad("CLOCK_REALTIME is %lld ns after gettimeofday", diff);
    return 0;
}

/* Whether `slept` ns for a wait of `want` ns is plausible: never shorter, and
 * less than 10 s (a generous bound: the machine may be busy). */
static int expect_slept(const char *what, long long slept, long long want)
{
    if (slept < want)
        return bad("%s lasted %lld ns, less than %lld", what, slept, want);
    if (slept >= 10000000000LL)
        return bad("%s lasted %lld ns, 10 s or more", what, slept);
    return 0;
}

static int check_nanosleep_30ms(void)
{
    struct timespec req = {0, 30000000L};
    long long before = now_ns(CLOCK_MONOTONIC);
    int r = nanosleep(&req, NULL);
    long long slept = now_ns(CLOCK_MONOTONIC) - before;
    if (r != 0)
        return bad_call("nanosleep", r, errno);
    return expect_slept("nanosleep(30 ms)", slept, 30000000LL);
}

static int check_clock_nanosleep_abstime(void)
{
    clockid_t clocks[2] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (int i = 0; i < 2; i++) {
        long long start = now_ns(clocks[i]), deadline = start + 20000000LL;
        struct timespec until = {deadline / 1000000000LL, deadline % 1000000000LL};
        int r = clock_nanosleep(clocks[i], TIMER_ABSTIME, &until, NULL);
        if (r != 0)
            return bad("clock_nanosleep(%s, TIMER_ABSTIME) returned %d (%s)",
                       i ? "CLOCK_REALTIME" : "CLOCK_MONOTONIC", r, strerror(r));
        long long end = now_ns(clocks[i]);
        if (expect_slept(i ? "an absolute sleep on CLOCK_REALTIME"
                           : "an absolute sleep on CLOCK_MONOTONIC",
                         end - start, deadline - start) != 0)
            return -1;
    }
    return 0;
}

static int check_clock_getres(void)
{
    clockid_t clocks[2] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (int i = 0; i < 2; i++) {
        struct timespec res = {-1, -1};
        int r = clock_getres(clocks[i], &res);
        if (r != 0)
            return bad_call("clock_getres", r, errno);
        if (res.tv_sec != 0 || res.tv_nsec <= 0 || res.tv_nsec > 10000000L)
            return bad("clock %d has a resolution of %lld.%09ld s", clocks[i],
                       (long long)res.tv_sec, res.tv_nsec);
    }
    errno = 0;
    int r = clock_getres((clockid_t)12345, NULL);
    return expect_errno("clock_getres of an unknown clock", r, errno, EINVAL);
}

/* ------------------------------------------------------------------------ */
/* The process */

static int check_uname(void)
{
    struct utsname u;
    if (uname(&u) != 0)
        return bad_call("uname", -1, errno);
    if (strcmp(u.sysname, "Linux") != 0)
        return bad("sysname \"%s\"", u.sysname);
    if (strcmp(u.machine, "x86_64") != 0)
        return bad("machine \"%s\"", u.machine);
    if (u.release[0] < '1' || u.release[0] > '9')
        return bad("release \"%s\" does not start with a version", u.release);
    return 0;
}

static int check_getpid(void)
{
    pid_t pid = getpid(), ppid = getppid();
    if (pid != 1)
        return bad("getpid is %d (getppid %d), expected 1", pid, ppid);
    if (getpgrp() != 1 || getsid(0) != 1)
        return bad("getpgrp %d, getsid %d, expected 1", getpgrp(), getsid(0));
    return 0;
}

static int check_getuid(void)
{
    if (getuid() != 0 || geteuid() != 0 || getgid() != 0 || getegid() != 0)
        return bad("uid %d euid %d gid %d egid %d, expected 0", getuid(), geteuid(),
                   getgid(), getegid());
    return 0;
}

static int check_sched_getaffinity(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    int r = sched_getaffinity(0, sizeof set, &set);
    if (r != 0)
        return bad_call("sched_getaffinity", r, errno);
    int n = CPU_COUNT(&set);
    if (native ? n < 1 : n != 1)
        return bad("%d CPUs in the affinity mask, expected %s", n, native ? "at least 1" : "1");
    if (!native && !CPU_ISSET(0, &set))
        return bad("CPU 0 is not in the affinity mask");
    return 0;
}

static int check_getrlimit_nofile(void)
{
    struct rlimit rl;
    int r = getrlimit(RLIMIT_NOFILE, &rl);
    if (r != 0)
        return bad_call("getrlimit(RLIMIT_NOFILE)", r, errno);
    if (rl.rlim_cur == 0 || rl.rlim_cur > rl.rlim_max)
        return bad("RLIMIT_NOFILE cur %llu max %llu", (unsigned long long)rl.rlim_cur,
                   (unsigned long long)rl.rlim_max);
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
}

static int check_sigaction_read_back(void)
{
    struct sigaction sa, prev, got;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sa.sa_flags = SA_RESTART | SA_NODEFER;
    if (sigaction(SIGUSR1, &sa, &prev) != 0)
        return bad_call("sigaction(SIGUSR1)", -1, errno);
    if (sigaction(SIGUSR1, NULL, &got) != 0)
        return bad_call("sigaction(SIGUSR1, NULL)", -1, errno);
    sigaction(SIGUSR1, &prev, NULL);
    if (got.sa_handler != on_signal)
        return bad("the handler read back is %p, not %p", (void *)got.sa_handler,
                   (void *)on_signal);
    if ((got.sa_flags & (SA_RESTART | SA_NODEFER)) != (SA_RESTART | SA_NODEFER))
        return bad("the flags read back are 0x%x", got.sa_flags);
    if (!sigismember(&got.sa_mask, SIGUSR2) || sigismember(&got.sa_mask, SIGTERM))
        return bad("the mask read back is not {SIGUSR2}");
    if (prev.sa_handler != SIG_DFL)
        return bad("SIGUSR1's first disposition was not SIG_DFL");
    errno = 0;
    int r = sigaction(SIGKILL, &sa, NULL);
    return expect_errno("sigaction(SIGKILL)", r, errno, EINVAL);
}

static int check_sigprocmask_block_raise(void)
{
    sigset_t set, old, cur;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &set, &old) != 0)
        return bad_call("sigprocmask(SIG_BLOCK)", -1, errno);
    if (sigprocmask(SIG_BLOCK, NULL, &cur) != 0 || !sigismember(&cur, SIGUSR1))
        return bad("the mask read back does not hold SIGUSR1");
    int r = raise(SIGUSR1);
    /* Reaching here is the check: a blocked SIGUSR1 does not end the process.
     * Ignoring it discards it before it is unblocked. */
    signal(SIGUSR1, SIG_IGN);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    if (r != 0)
        return bad_call("raise(SIGUSR1) while blocked", r, errno);
    return 0;
}

static int check_sig_ign_raise(void)
{
    void (*prev)(int) = signal(SIGUSR2, SIG_IGN);
    if (prev == SIG_ERR)
        return bad_call("signal(SIGUSR2, SIG_IGN)", -1, errno);
    int r = raise(SIGUSR2);
    signal(SIGUSR2, prev);
    if (r != 0)
        return bad_call("raise(SIGUSR2) while ignored", r, errno);
    return 0;
}

static int check_kill_signal_zero(void)
{
    int r = kill(getpid(), 0);
    if (r != 0)
        return bad_call("kill(getpid(), 0)", r, errno);
    return 0;
}

static int check_sigaltstack_read_back(void)
{
    static char stack[64 * 1024];
    stack_t ss = {.ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0}, old, got;
    if (sigaltstack(&ss, &old) != 0)
        return bad_call("sigaltstack", -1, errno);
    if (sigaltstack(NULL, &got) != 0)
        return bad_call("sigaltstack(NULL)", -1, errno);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    if (got.ss_sp != stack || got.ss_size != sizeof stack || got.ss_flags != 0)
        return bad("read back sp %p size %zu flags %d, expected %p %zu 0", got.ss_sp,
                   got.ss_size, got.ss_flags, (void *)stack, sizeof stack);
    if (!(old.ss_flags & SS_DISABLE))
        return bad("the first alternate stack was not disabled (flags %d)", old.ss_flags);
    stack_t tiny = {.ss_sp = stack, .ss_size = 16, .ss_flags = 0};
    errno = 0;
    int r = sigaltstack(&tiny, NULL);
    return expect_errno("sigaltstack of 16 bytes", r, errno, ENOMEM);
}

static int check_socketpair_enosys(void)
{
    int sv[2];
    errno = 0;
    int r = socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    return expect_errno("socketpair(AF_UNIX, SOCK_STREAM)", r, errno, ENOSYS);
}

static int check_prctl_get_name(void)
{
    char name[16] = {0};
    int r = prctl(PR_GET_NAME, name);
    if (r != 0)
        return bad_call("prctl(PR_GET_NAME)", r, errno);
    /* The kernel names a process after its executable, cut to 15 bytes. */
    char want[16];
    snprintf(want, sizeof want, "%s", base_name(argv0));
    if (strcmp(name, want) != 0)
        return bad("the name is \"%s\", expected \"%s\"", name, want);
    return 0;
}

static int check_prctl_set_name(void)
{
    char name[16] = {0};
    if (prctl(PR_SET_NAME, "conformance") != 0)
        return bad_call("prctl(PR_SET_NAME)", -1, errno);
    if (prctl(PR_GET_NAME, name) != 0)
        return bad_call("prctl(PR_GET_NAME)", -1, errno);
    if (strcmp(name, "conformance") != 0)
        return bad("the name read back is \"%s\", expected \"conformance\"", name);
    return 0;
}

static int check_sysinfo(void)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return bad_call("sysinfo", -1, errno);
    unsigned long long unit = si.mem_unit ? si.mem_unit : 1;
    unsigned long long total = si.totalram * unit, free_ram = si.freeram * unit;
    if (total < 32ULL << 20)
        return bad("totalram is %llu bytes", total);
    if (free_ram > total)
        return bad("freeram %llu exceeds totalram %llu", free_ram, total);
    if (si.procs < 1)
        return bad("procs is %u", si.procs);
    return 0;
}

/* membarrier commands (include/uapi/linux/membarrier.h). */
#define MEMBARRIER_CMD_QUERY 0
#define MEMBARRIER_CMD_GLOBAL (1 << 0)
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ (1 << 7)
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)

static long membarrier(int cmd, unsigned flags)
{
    return syscall(SYS_membarrier, cmd, flags, 0);
}

static int check_membarrier_query(void)
{
    long r = membarrier(MEMBARRIER_CMD_QUERY, 0);
    if (r < 0)
        return bad_call("membarrier(QUERY)", r, errno);
    /* Every command from GLOBAL_EXPEDITED to REGISTER_PRIVATE_EXPEDITED_RSEQ
     * (GLOBAL itself is missing where CPUs run without ticks). */
    long want = 0x1FE & ~MEMBARRIER_CMD_GLOBAL;
    if ((r & want) != want)
        return bad("membarrier(QUERY) = %#lx, lacking %#lx", r, want & ~r);
    errno = 0;
    r = membarrier(MEMBARRIER_CMD_QUERY, 1);
    if (expect_errno("membarrier(QUERY, flags 1)", r, errno, EINVAL))
        return -1;
    errno = 0;
    r = membarrier(1 << 20, 0);
    return expect_errno("membarrier(1 << 20)", r, errno, EINVAL);
}

static int check_membarrier_private_expedited(void)
{
    errno = 0;
    long r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
    if (expect_errno("membarrier(PRIVATE_EXPEDITED) unregistered", r, errno, EPERM))
        return -1;
    r = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0);
    if (r != 0)
        return bad_call("membarrier(REGISTER_PRIVATE_EXPEDITED)", r, errno);
    r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
    if (r != 0)
        return bad_call("membarrier(PRIVATE_EXPEDITED) registered", r, errno);
    errno = 0;
    r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0);
    if (expect_errno("membarrier(PRIVATE_EXPEDITED_RSEQ) unregistered", r, errno, EPERM))
        return -1;
    if (membarrier(MEMBARRIER_CMD_QUERY, 0) & MEMBARRIER_CMD_GET_REGISTRATIONS) {
        r = membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS, 0);
        if (r != MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
            return bad("membarrier(GET_REGISTRATIONS) = %ld", r);
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2 || argv[1][0] != '/') {
        fprintf(stderr, "usage: posix DIR (an absolute path)\n");
        return 2;
    }
    dir = argv[1];
    argv0 = argv[0];
    const char *env = getenv("NACRE_NATIVE");
    native = env && strcmp(env, "1") == 0;

    /* First, while the working directory is still the one the app started in. */
    run_check("getcwd_at_start", check_getcwd_at_start);

    run_check("open_read_close", check_open_read_close);
    run_check("dup_shares_offset", check_dup_shares_offset);
    run_check("dup2_onto_open_fd", check_dup2_onto_open_fd);
    run_check("dup3_cloexec", check_dup3_cloexec);
    run_check("fcntl_dupfd_minimum", check_fcntl_dupfd_minimum);
    run_check("fcntl_getfl_access_mode", check_fcntl_getfl_access_mode);
    run_check("lseek", check_lseek);
    run_check("pread_keeps_offset", check_pread_keeps_offset);
    run_check("readv_two_buffers", check_readv_two_buffers);
    run_check("fstat", check_fstat);
    run_check("stat_and_lstat", check_stat_and_lstat);
    run_check("fstatat", check_fstatat);
    run_check("statx", check_statx);
    run_check("readdir", check_readdir);
    run_check("access_read", check_access_read);
    run_check("open_missing_enoent", check_open_missing_enoent);
    run_check("open_trailing_slash_enotdir", check_open_trailing_slash_enotdir);
    run_check("read_directory_eisdir", check_read_directory_eisdir);

    run_check("chdir_relative_open", check_chdir_relative_open);
    run_check("fchdir", check_fchdir);

    run_check("proc_self_exe_link", check_proc_self_exe_link);
    run_check("proc_self_exe_is_elf", check_proc_self_exe_is_elf);
    run_check("proc_self_maps_stack", check_proc_self_maps_stack);

    run_check("dev_null", check_dev_null);
    run_check("dev_zero", check_dev_zero);
    run_check("dev_urandom", check_dev_urandom);
    run_check("getrandom", check_getrandom);

    run_check("isatty_stdin", check_isatty_stdin);
    run_check("tiocgwinsz_enotty", check_tiocgwinsz_enotty);
    run_check("write_zero_bytes", check_write_zero_bytes);
    run_check("writev_stdout", check_writev_stdout);
    run_check("poll_stdin", check_poll_stdin);

    run_check("clock_monotonic_steps", check_clock_monotonic_steps);
    run_check("clock_realtime_after_2020", check_clock_realtime_after_2020);
    run_check("gettimeofday_matches_realtime", check_gettimeofday_matches_realtime);
    run_check("nanosleep_30ms", check_nanosleep_30ms);
    run_check("clock_nanosleep_abstime", check_clock_nanosleep_abstime);
    run_check("clock_getres", check_clock_getres);

    run_check("uname", check_uname);
    run_nacre_check("getpid", check_getpid);
    run_nacre_check("getuid", check_getuid);
    run_check("sched_getaffinity", check_sched_getaffinity);
    run_check("getrlimit_nofile", check_getrlimit_nofile);
    run_check("sigaction_read_back", check_sigaction_read_back);
    run_check("sigprocmask_block_raise", check_sigprocmask_block_raise);
    run_check("sig_ign_raise", check_sig_ign_raise);
    run_check("kill_signal_zero", check_kill_signal_zero);
    run_check("sigaltstack_read_back", check_sigaltstack_read_back);
    run_nacre_check("socketpair_enosys", check_socketpair_enosys);
    run_check("prctl_get_name", check_prctl_get_name);
    run_check("prctl_set_name", check_prctl_set_name);
    run_check("sysinfo", check_sysinfo);
    run_check("membarrier_query", check_membarrier_query);
    run_check("membarrier_private_expedited", check_membarrier_private_expedited);
    return failures == 0 ? 0 : 1;
}
