/* Writable files: every call that creates, changes or removes a file, with its
 * errors, in a scratch directory (argv[1], empty: /tmp in the guest) and over a
 * packaged tree (argv[2]: a copy of the fixture natively, /data in the guest,
 * changed in place through copy-up). Prints one "ok NAME" line per check, or
 * "FAIL NAME: ..." and exits 1; nothing it prints depends on where it runs.
 *
 * With argv[1] == "fill", it fills argv[2] until ENOSPC instead, then frees and
 * writes again (the guest's small memory is the limit). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(const char *name, int ok, const char *detail) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s (errno %d)\n", name, detail, errno);
        failures++;
    }
}

/* The call failed with `want`. */
static int err_is(long r, int want) { return r == -1 && errno == want; }

#define CHECK(name, cond) check(name, (cond), #cond)

static char path_buf[4][4096];
static const char *at(int slot, const char *dir, const char *name) {
    snprintf(path_buf[slot], sizeof path_buf[slot], "%s/%s", dir, name);
    return path_buf[slot];
}

static int write_all(int fd, const void *buf, size_t len) {
    return write(fd, buf, len) == (ssize_t)len;
}

/* The names in `dir`, sorted, joined with commas (no . and ..). */
static void listing(const char *dir, char *out, size_t cap) {
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    out[0] = 0;
    if (n < 0) {
        snprintf(out, cap, "(error %d)", errno);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            if (out[0])
                strncat(out, ",", cap - strlen(out) - 1);
            strncat(out, names[i]->d_name, cap - strlen(out) - 1);
        }
        free(names[i]);
    }
    free(names);
}

static uint64_t sum_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    uint64_t h = 1469598103934665603ull;
    unsigned char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * 1099511628211ull;
    close(fd);
    return h;
}

static void scratch(const char *d) {
    struct stat st;
    char buf[256], list[1024];
    const char *f = at(0, d, "file");

    /* open O_CREAT, O_EXCL, write, read back, stat */
    int fd = open(f, O_CREAT | O_EXCL | O_RDWR, 0640);
    CHECK("create", fd >= 0);
    CHECK("create-excl", err_is(open(f, O_CREAT | O_EXCL | O_RDWR, 0640), EEXIST));
    CHECK("write", write_all(fd, "hello, world\n", 13));
    CHECK("fstat-size", fstat(fd, &st) == 0 && st.st_size == 13 && S_ISREG(st.st_mode));
    CHECK("mode-umask", (st.st_mode & 07777) == (0640 & ~022));
    CHECK("nlink-1", st.st_nlink == 1);
    CHECK("blocks", st.st_blocks >= 1);
    CHECK("lseek-set", lseek(fd, 7, SEEK_SET) == 7);
    CHECK("read-at-offset", read(fd, buf, sizeof buf) == 6 && !memcmp(buf, "world\n", 6));
    CHECK("read-eof", read(fd, buf, sizeof buf) == 0);
    CHECK("pwrite", pwrite(fd, "W", 1, 7) == 1);
    CHECK("pread", pread(fd, buf, 5, 7) == 5 && !memcmp(buf, "World", 5));
    CHECK("lseek-end", lseek(fd, 0, SEEK_END) == 13);
    /* a hole past the end */
    CHECK("pwrite-past-end", pwrite(fd, "!", 1, 10000) == 1);
    CHECK("size-after-hole", fstat(fd, &st) == 0 && st.st_size == 10001);
    memset(buf, 1, sizeof buf);
    CHECK("hole-reads-zeros", pread(fd, buf, 100, 5000) == 100 && buf[0] == 0 && buf[99] == 0);
    /* ftruncate down and up: the cut bytes come back as zeros */
    CHECK("ftruncate-down", ftruncate(fd, 5) == 0 && fstat(fd, &st) == 0 && st.st_size == 5);
    CHECK("ftruncate-up", ftruncate(fd, 20) == 0);
    memset(buf, 1, sizeof buf);
    CHECK("truncated-tail-zero", pread(fd, buf, 20, 0) == 20 && !memcmp(buf, "hello", 5) &&
                                     buf[5] == 0 && buf[19] == 0);
    CHECK("ftruncate-negative", err_is(ftruncate(fd, -1), EINVAL));
    CHECK("fsync", fsync(fd) == 0 && fdatasync(fd) == 0);
    /* readv / writev */
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    CHECK("writev", lseek(fd, 0, SEEK_SET) == 0 && writev(fd, iov, 2) == 4);
    char r1[3] = {0}, r2[3] = {0};
    struct iovec rv[2] = {{r1, 2}, {r2, 2}};
    CHECK("readv", lseek(fd, 0, SEEK_SET) == 0 && readv(fd, rv, 2) == 4 &&
                       !strcmp(r1, "ab") && !strcmp(r2, "cd"));
    /* fallocate */
    CHECK("fallocate", fallocate(fd, 0, 0, 65536) == 0 && fstat(fd, &st) == 0 &&
                           st.st_size == 65536);
    CHECK("fallocate-keep-size", fallocate(fd, FALLOC_FL_KEEP_SIZE, 65536, 4096) == 0 &&
                                     fstat(fd, &st) == 0 && st.st_size == 65536);
    CHECK("fallocate-bad-len", err_is(fallocate(fd, 0, 0, 0), EINVAL));
    /* dup shares the offset; close */
    int d2 = dup(fd);
    CHECK("dup-shares-offset", lseek(fd, 3, SEEK_SET) == 3 && lseek(d2, 0, SEEK_CUR) == 3);
    CHECK("close", close(d2) == 0 && close(fd) == 0);

    /* O_APPEND */
    fd = open(f, O_WRONLY | O_APPEND);
    CHECK("append", fd >= 0 && write_all(fd, "END", 3) && lseek(fd, 0, SEEK_CUR) == 65539);
    CHECK("fcntl-getfl-append", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    close(fd);
    /* O_TRUNC */
    fd = open(f, O_RDWR | O_TRUNC);
    CHECK("trunc", fd >= 0 && fstat(fd, &st) == 0 && st.st_size == 0);
    close(fd);
    /* access mode errors */
    fd = open(f, O_RDONLY);
    CHECK("write-on-rdonly", err_is(write(fd, "x", 1), EBADF));
    CHECK("ftruncate-on-rdonly", err_is(ftruncate(fd, 0), EINVAL));
    CHECK("fallocate-on-rdonly", err_is(fallocate(fd, 0, 0, 10), EBADF));
    close(fd);
    fd = open(f, O_WRONLY);
    CHECK("read-on-wronly", err_is(read(fd, buf, 1), EBADF));
    close(fd);
    CHECK("open-missing", err_is(open(at(1, d, "missing"), O_RDONLY), ENOENT));
    CHECK("open-dir-write", err_is(open(d, O_WRONLY), EISDIR));
    CHECK("open-file-directory", err_is(open(f, O_RDONLY | O_DIRECTORY), ENOTDIR));
    CHECK("open-under-file", err_is(open(at(1, f, "x"), O_CREAT | O_RDWR, 0600), ENOTDIR));
    CHECK("creat-trailing-slash", err_is(open(at(1, d, "new/"), O_CREAT | O_RDWR, 0600), EISDIR));

    /* mkdir, rmdir */
    const char *sub = at(1, d, "sub");
    CHECK("mkdir", mkdir(sub, 0755) == 0);
    CHECK("mkdir-exists", err_is(mkdir(sub, 0755), EEXIST));
    CHECK("mkdir-missing-parent", err_is(mkdir(at(2, d, "no/such"), 0755), ENOENT));
    CHECK("dir-nlink", stat(sub, &st) == 0 && st.st_nlink == 2 && S_ISDIR(st.st_mode));
    CHECK("mkdir-nested", mkdir(at(2, sub, "inner"), 0700) == 0);
    CHECK("parent-nlink", stat(sub, &st) == 0 && st.st_nlink == 3);
    CHECK("rmdir-not-empty", err_is(rmdir(sub), ENOTEMPTY));
    CHECK("rmdir-file", err_is(rmdir(f), ENOTDIR));
    CHECK("unlink-dir", err_is(unlink(sub), EISDIR));
    CHECK("rmdir-inner", rmdir(at(2, sub, "inner")) == 0);
    CHECK("parent-nlink-after", stat(sub, &st) == 0 && st.st_nlink == 2);
    CHECK("rmdir-dot", err_is(rmdir(at(2, sub, ".")), EINVAL));

    /* rename */
    CHECK("rename", rename(f, at(2, sub, "moved")) == 0);
    CHECK("rename-source-gone", err_is(stat(f, &st), ENOENT));
    CHECK("rename-missing", err_is(rename(f, at(2, d, "x")), ENOENT));
    fd = open(at(2, d, "other"), O_CREAT | O_WRONLY, 0644);
    CHECK("rename-over-prep", fd >= 0 && write_all(fd, "other", 5));
    close(fd);
    CHECK("rename-over-file", rename(at(2, d, "other"), at(3, sub, "moved")) == 0);
    CHECK("rename-over-content", stat(at(3, sub, "moved"), &st) == 0 && st.st_size == 5);
    CHECK("mkdir-empty", mkdir(at(2, d, "empty"), 0755) == 0);
    CHECK("rename-file-over-dir", err_is(rename(at(3, sub, "moved"), at(2, d, "empty")), EISDIR));
    CHECK("rename-dir-over-file", err_is(rename(at(2, d, "empty"), at(3, sub, "moved")), ENOTDIR));
    CHECK("rename-into-self", err_is(rename(sub, at(3, sub, "deeper")), EINVAL));
    CHECK("rename-dir", rename(at(2, d, "empty"), at(3, sub, "emptied")) == 0);
    CHECK("rename-dir-nlink", stat(sub, &st) == 0 && st.st_nlink == 3);
    CHECK("renameat2-noreplace",
          err_is(syscall(SYS_renameat2, AT_FDCWD, at(2, sub, "moved"), AT_FDCWD,
                         at(3, sub, "moved"), 1), EEXIST));
    fd = open(at(2, sub, "x"), O_CREAT | O_WRONLY, 0644);
    CHECK("exchange-prep", fd >= 0 && write_all(fd, "xx", 2));
    close(fd);
    CHECK("renameat2-exchange",
          syscall(SYS_renameat2, AT_FDCWD, at(2, sub, "moved"), AT_FDCWD, at(3, sub, "x"), 2) ==
                  0 &&
              stat(at(2, sub, "moved"), &st) == 0 && st.st_size == 2);
    listing(sub, list, sizeof list);
    check("listing", !strcmp(list, "emptied,moved,x"), list);

    /* unlink while open: the data lives on until the last close */
    fd = open(at(2, sub, "x"), O_RDWR);
    CHECK("unlink-open", fd >= 0 && unlink(at(2, sub, "x")) == 0);
    CHECK("unlinked-gone", err_is(stat(at(2, sub, "x"), &st), ENOENT));
    CHECK("unlinked-fstat", fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 5);
    CHECK("unlinked-read", pread(fd, buf, 5, 0) == 5 && !memcmp(buf, "other", 5));
    CHECK("unlinked-write", pwrite(fd, "O", 1, 0) == 1);
    close(fd);
    CHECK("unlink-missing", err_is(unlink(at(2, sub, "x")), ENOENT));

    /* links */
    CHECK("link", link(at(2, sub, "moved"), at(3, d, "hard")) == 0);
    CHECK("link-nlink", stat(at(3, d, "hard"), &st) == 0 && st.st_nlink == 2);
    CHECK("link-exists", err_is(link(at(2, sub, "moved"), at(3, d, "hard")), EEXIST));
    CHECK("link-dir", err_is(link(sub, at(3, d, "dirlink")), EPERM));
    CHECK("symlink", symlink("sub/moved", at(2, d, "soft")) == 0);
    CHECK("symlink-exists", err_is(symlink("x", at(2, d, "soft")), EEXIST));
    ssize_t n = readlink(at(2, d, "soft"), buf, sizeof buf);
    CHECK("readlink", n == 9 && !memcmp(buf, "sub/moved", 9));
    CHECK("readlink-file", err_is(readlink(at(2, d, "hard"), buf, sizeof buf), EINVAL));
    CHECK("lstat-link", lstat(at(2, d, "soft"), &st) == 0 && S_ISLNK(st.st_mode) && st.st_size == 9);
    CHECK("stat-through-link", stat(at(2, d, "soft"), &st) == 0 && S_ISREG(st.st_mode) &&
                                   st.st_size == 2);
    fd = open(at(2, d, "soft"), O_RDONLY);
    CHECK("open-through-link", fd >= 0 && read(fd, buf, 2) == 2 && !memcmp(buf, "xx", 2));
    close(fd);
    CHECK("open-nofollow", err_is(open(at(2, d, "soft"), O_RDONLY | O_NOFOLLOW), ELOOP));
    CHECK("symlink-dir", symlink("sub", at(2, d, "subdir")) == 0 &&
                             stat(at(3, d, "subdir/emptied"), &st) == 0 && S_ISDIR(st.st_mode));
    CHECK("symlink-loop", symlink("loop", at(2, d, "loop")) == 0 &&
                              err_is(open(at(2, d, "loop"), O_RDONLY), ELOOP));
    CHECK("dangling-create", symlink("target", at(2, d, "dangling")) == 0 &&
                                 (fd = open(at(2, d, "dangling"), O_CREAT | O_WRONLY, 0600)) >= 0 &&
                                 close(fd) == 0 && stat(at(2, d, "target"), &st) == 0);
    CHECK("unlink-link", unlink(at(2, d, "soft")) == 0 && stat(at(2, sub, "moved"), &st) == 0);
    CHECK("unlink-hard", unlink(at(2, d, "hard")) == 0 && stat(at(2, sub, "moved"), &st) == 0 &&
                             st.st_nlink == 1);

    /* chmod, chown, utimensat */
    const char *m = at(2, sub, "moved");
    CHECK("chmod", chmod(m, 0600) == 0 && stat(m, &st) == 0 && (st.st_mode & 07777) == 0600);
    fd = open(m, O_RDONLY);
    CHECK("fchmod", fchmod(fd, 0604) == 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0604);
    CHECK("fchown", fchown(fd, 1234, 5678) == 0 && fstat(fd, &st) == 0 && st.st_uid == 1234 &&
                        st.st_gid == 5678);
    CHECK("chown-unchanged", chown(m, -1, 42) == 0 && stat(m, &st) == 0 && st.st_uid == 1234 &&
                                 st.st_gid == 42);
    close(fd);
    struct timespec ts[2] = {{1000000000, 5}, {1200000000, 123456789}};
    CHECK("utimensat", utimensat(AT_FDCWD, m, ts, 0) == 0 && stat(m, &st) == 0 &&
                           st.st_mtim.tv_sec == 1200000000 && st.st_mtim.tv_nsec == 123456789 &&
                           st.st_atim.tv_sec == 1000000000);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {7, 0}};
    CHECK("utimensat-omit", utimensat(AT_FDCWD, m, omit, 0) == 0 && stat(m, &st) == 0 &&
                                st.st_mtim.tv_sec == 7 && st.st_atim.tv_sec == 1000000000);
    struct timespec bad[2] = {{0, 2000000000}, {0, 0}};
    CHECK("utimensat-einval", err_is(utimensat(AT_FDCWD, m, bad, 0), EINVAL));
    struct timeval tv[2] = {{3, 0}, {4, 500000}};
    CHECK("utimes", utimes(m, tv) == 0 && stat(m, &st) == 0 && st.st_mtim.tv_sec == 4 &&
                        st.st_mtim.tv_nsec == 500000000);
    time_t before = time(NULL);
    CHECK("utimensat-now", utimensat(AT_FDCWD, m, NULL, 0) == 0 && stat(m, &st) == 0 &&
                               st.st_mtim.tv_sec >= before - 1);
    CHECK("truncate", truncate(m, 1) == 0 && stat(m, &st) == 0 && st.st_size == 1);
    CHECK("truncate-dir", err_is(truncate(sub, 0), EISDIR));

    /* directory fds, getdents through the libc, getcwd */
    int dfd = open(sub, O_RDONLY | O_DIRECTORY);
    CHECK("openat-dirfd", dfd >= 0 && (fd = openat(dfd, "made-at", O_CREAT | O_RDWR, 0644)) >= 0);
    close(fd);
    CHECK("mkdirat", mkdirat(dfd, "dir-at", 0755) == 0);
    CHECK("unlinkat-dir", unlinkat(dfd, "dir-at", AT_REMOVEDIR) == 0);
    CHECK("unlinkat-file-as-dir", err_is(unlinkat(dfd, "made-at", AT_REMOVEDIR), ENOTDIR));
    CHECK("fstatat", fstatat(dfd, "made-at", &st, 0) == 0 && st.st_size == 0);
    CHECK("fchdir", fchdir(dfd) == 0 && getcwd(buf, sizeof buf) != NULL &&
                        strlen(buf) > 4 && !strcmp(buf + strlen(buf) - 4, "/sub"));
    CHECK("relative-open", (fd = open("made-at", O_RDONLY)) >= 0);
    close(fd);
    CHECK("chdir-back", chdir("/") == 0);
    close(dfd);
    listing(sub, list, sizeof list);
    check("listing-2", !strcmp(list, "emptied,made-at,moved"), list);

    /* statfs */
    struct statfs sf;
    CHECK("statfs", statfs(d, &sf) == 0 && sf.f_bsize > 0 && sf.f_bfree <= sf.f_blocks &&
                        sf.f_namelen == 255);
    fd = open(m, O_RDONLY);
    CHECK("fstatfs", fstatfs(fd, &sf) == 0 && sf.f_bsize > 0);
    close(fd);

    /* a bigger file, written and read in odd pieces */
    static unsigned char big[3 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 131 + (i >> 12));
    fd = open(at(2, d, "big"), O_CREAT | O_RDWR, 0644);
    size_t done = 0;
    while (done < sizeof big) {
        size_t piece = (sizeof big - done) < 70001 ? sizeof big - done : 70001;
        if (write(fd, big + done, piece) != (ssize_t)piece)
            break;
        done += piece;
    }
    CHECK("big-write", done == sizeof big);
    static unsigned char back[3 << 20];
    CHECK("big-read", pread(fd, back, sizeof back, 0) == (ssize_t)sizeof back &&
                          !memcmp(big, back, sizeof big));
    close(fd);
    CHECK("big-unlink", unlink(at(2, d, "big")) == 0);
}

/* Copy-up: the packaged tree at `p` changes in place. */
static void packaged(const char *p) {
    struct stat st;
    char buf[256], list[1024];
    uint64_t before = sum_file(at(0, p, "big.bin"));

    int fd = open(at(0, p, "hello.txt"), O_RDWR);
    CHECK("copy-up-open", fd >= 0);
    CHECK("copy-up-read", read(fd, buf, 5) == 5 && !memcmp(buf, "hello", 5));
    CHECK("copy-up-write", write_all(fd, "!!", 2));
    close(fd);
    fd = open(at(0, p, "hello.txt"), O_RDONLY);
    CHECK("copy-up-persists", read(fd, buf, 64) == 27 && !memcmp(buf, "hello!!rom a packaged file\n", 27));
    close(fd);
    CHECK("copy-up-append", (fd = open(at(0, p, "odd.bin"), O_WRONLY | O_APPEND)) >= 0 &&
                                write_all(fd, "tail", 4) && fstat(fd, &st) == 0 &&
                                st.st_size == 4101);
    close(fd);
    CHECK("copy-up-trunc", (fd = open(at(0, p, "nested/chunk.bin"), O_WRONLY | O_TRUNC)) >= 0 &&
                               fstat(fd, &st) == 0 && st.st_size == 0);
    close(fd);
    CHECK("copy-up-big-same", sum_file(at(0, p, "big.bin")) == before);
    CHECK("unlink-packaged", unlink(at(0, p, "empty")) == 0 &&
                                 err_is(stat(at(0, p, "empty"), &st), ENOENT));
    CHECK("unlink-packaged-again", err_is(unlink(at(0, p, "empty")), ENOENT));
    CHECK("recreate-packaged", (fd = open(at(0, p, "empty"), O_CREAT | O_WRONLY, 0600)) >= 0 &&
                                   write_all(fd, "new", 3));
    close(fd);
    CHECK("rename-packaged-file", rename(at(0, p, "with space.txt"), at(1, p, "renamed.txt")) == 0 &&
                                      sum_file(at(0, p, "renamed.txt")) != 0);
    /* overlayfs (and nacre) refuse to move a packaged directory with EXDEV; a
     * native run on an ordinary file system moves it: moved back, both agree. */
    int moved = rename(at(0, p, "nested"), at(1, p, "moved"));
    CHECK("rename-packaged-dir", err_is(moved, EXDEV) ||
                                     (moved == 0 && rename(at(1, p, "moved"), at(0, p, "nested")) == 0));
    CHECK("rmdir-packaged-not-empty", err_is(rmdir(at(0, p, "nested")), ENOTEMPTY));
    CHECK("rmdir-packaged-empty", rmdir(at(0, p, "empty-dir")) == 0 &&
                                      err_is(stat(at(0, p, "empty-dir"), &st), ENOENT));
    CHECK("mkdir-over-whiteout", mkdir(at(0, p, "empty-dir"), 0700) == 0 &&
                                     stat(at(0, p, "empty-dir"), &st) == 0 &&
                                     (st.st_mode & 0777) == 0700);
    CHECK("chmod-packaged", chmod(at(0, p, "secret.txt"), 0644) == 0 &&
                                stat(at(0, p, "secret.txt"), &st) == 0 &&
                                (st.st_mode & 0777) == 0644);
    CHECK("create-in-packaged-dir",
          (fd = open(at(0, p, "nested/deeper/new.txt"), O_CREAT | O_EXCL | O_WRONLY, 0644)) >= 0);
    close(fd);
    CHECK("mkdir-in-packaged", mkdir(at(0, p, "nested/deeper/deepest/d"), 0755) == 0);
    CHECK("link-packaged", link(at(0, p, "nested/deeper/leaf.txt"), at(1, p, "leaf-link")) == 0 &&
                               stat(at(0, p, "leaf-link"), &st) == 0 && st.st_nlink == 2);
    CHECK("unlink-packaged-dir-file", unlink(at(0, p, "nested/chunk-plus-one.bin")) == 0);
    listing(p, list, sizeof list);
    check("merged-root", !strcmp(list, "big.bin,empty,empty-dir,hello.txt,leaf-link,nested,"
                                       "odd.bin,renamed.txt,secret.txt"),
          list);
    listing(at(0, p, "nested"), list, sizeof list);
    check("merged-nested", !strcmp(list, "chunk.bin,deeper"), list);
    listing(at(0, p, "nested/deeper"), list, sizeof list);
    check("merged-deeper", !strcmp(list, "deepest,leaf.txt,new.txt"), list);
    listing(at(0, p, "nested/deeper/deepest"), list, sizeof list);
    check("merged-deepest", !strcmp(list, "d,note"), list);
    CHECK("nested-dir-nlink", stat(at(0, p, "nested/deeper/deepest"), &st) == 0 &&
                                  st.st_nlink == 3);
}

static int fill(const char *d) {
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    int fd = open(at(0, d, "fill"), O_CREAT | O_WRONLY, 0644);
    long total = 0;
    ssize_t n;
    while ((n = write(fd, chunk, sizeof chunk)) > 0)
        total += n;
    int full = n < 0 && errno == ENOSPC;
    printf("%s filled\n", full ? "ok" : "FAIL");
    struct statfs sf;
    printf("%s statfs-full\n",
           statfs(d, &sf) == 0 && sf.f_bavail < 256 ? "ok" : "FAIL");
    close(fd);
    int again = open(at(1, d, "more"), O_CREAT | O_WRONLY, 0644);
    int denied = write(again, chunk, sizeof chunk) < (ssize_t)sizeof chunk;
    printf("%s still-full\n", denied ? "ok" : "FAIL");
    close(again);
    unlink(at(1, d, "more"));
    printf("%s unlink\n", unlink(at(0, d, "fill")) == 0 ? "ok" : "FAIL");
    fd = open(at(0, d, "fill"), O_CREAT | O_WRONLY, 0644);
    long second = 0;
    while (second < total / 2 && (n = write(fd, chunk, sizeof chunk)) > 0)
        second += n;
    printf("%s write-again\n", second >= total / 2 ? "ok" : "FAIL");
    close(fd);
    return !(full && second >= total / 2);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "fill"))
        return fill(argv[2]);
    if (argc != 3) {
        fprintf(stderr, "usage: tmpfs SCRATCH PACKAGED | tmpfs fill DIR\n");
        return 2;
    }
    umask(022);
    scratch(argv[1]);
    packaged(argv[2]);
    return failures ? 1 : 0;
}
