/*
 * Lists a directory tree, for nacre's file tests: walks the directory given
 * as argv[1] recursively with opendir/readdir and fstatat, collects one line
 * per entry below it, sorts the lines bytewise and prints them. The walk does
 * not follow symbolic links.
 *
 * Build: gcc -static -O2 walk.c -o walk
 *    or: musl-gcc -static -O2 walk.c -o walk
 * Usage: walk [-l] DIR
 * Prints: for every entry below DIR (DIR itself is not listed) a line
 * "<type> <size> <path relative to DIR>\n", where type is `d` for a directory
 * (size printed as 0), `f` for a regular file (size in bytes) and `o` for
 * anything else (size 0); the lines sorted with strcmp. With -l, DIR itself
 * is listed too (as "."), and each line is "<type> <size> <links>
 * <mtime seconds>.<nanoseconds, 9 digits> <path>" (st_nlink and st_mtim).
 * Exit code 0, or 1 with "walk: <path>: <strerror>" on stderr when a
 * directory or entry cannot be read, 2 for a usage error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int long_format;

struct lines {
    char **items;
    size_t len;
    size_t cap;
};

static void fail(const char *path, int err)
{
    fprintf(stderr, "walk: %s: %s\n", path, strerror(err));
    exit(1);
}

static void *checked(void *p)
{
    if (p == NULL) {
        fprintf(stderr, "walk: out of memory\n");
        exit(1);
    }
    return p;
}

static void push(struct lines *lines, char *line)
{
    if (lines->len == lines->cap) {
        lines->cap = lines->cap ? 2 * lines->cap : 64;
        lines->items = checked(realloc(lines->items, lines->cap * sizeof(char *)));
    }
    lines->items[lines->len++] = line;
}

/* "a" + "/" + "b", or just "b" when the prefix is empty. */
static char *join(const char *prefix, const char *name)
{
    size_t len = strlen(prefix) + 1 + strlen(name) + 1;
    char *out = checked(malloc(len));
    if (prefix[0] == '\0')
        snprintf(out, len, "%s", name);
    else
        snprintf(out, len, "%s/%s", prefix, name);
    return out;
}

/* One output line for an entry. */
static char *line_for(char type, long long size, const struct stat *st, const char *rel)
{
    size_t len = strlen(rel) + 96;
    char *line = checked(malloc(len));
    if (long_format)
        snprintf(line, len, "%c %lld %llu %lld.%09ld %s", type, size,
                 (unsigned long long)st->st_nlink, (long long)st->st_mtim.tv_sec,
                 (long)st->st_mtim.tv_nsec, rel);
    else
        snprintf(line, len, "%c %lld %s", type, size, rel);
    return line;
}

/* Lists the directory `path` whose name relative to the root is `rel`. */
static void walk(const char *path, const char *rel, struct lines *lines)
{
    DIR *dir = opendir(path);
    if (dir == NULL)
        fail(path, errno);

    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(dir);
        if (entry == NULL) {
            if (errno != 0)
                fail(path, errno);
            break;
        }
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;

        char *child_path = join(path, name);
        char *child_rel = join(rel, name);
        struct stat st;
        if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            fail(child_path, errno);

        char type = 'o';
        long long size = 0;
        if (S_ISDIR(st.st_mode)) {
            type = 'd';
        } else if (S_ISREG(st.st_mode)) {
            type = 'f';
            size = (long long)st.st_size;
        }

        push(lines, line_for(type, size, &st, child_rel));

        if (type == 'd')
            walk(child_path, child_rel, lines);
        free(child_path);
        free(child_rel);
    }
    closedir(dir);
}

static int compare_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "-l") == 0) {
        long_format = 1;
        argv++;
        argc--;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: walk [-l] DIR\n");
        return 2;
    }

    struct lines lines = {0};
    if (long_format) {
        struct stat st;
        if (stat(argv[1], &st) != 0)
            fail(argv[1], errno);
        push(&lines, line_for('d', 0, &st, "."));
    }
    walk(argv[1], "", &lines);
    qsort(lines.items, lines.len, sizeof(char *), compare_lines);
    for (size_t i = 0; i < lines.len; i++)
        printf("%s\n", lines.items[i]);
    return fflush(stdout) == 0 ? 0 : 1;
}
