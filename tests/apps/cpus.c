/*
 * How many CPUs the program sees, by every way a static program asks: sysconf,
 * get_nprocs, sched_getaffinity, /proc/cpuinfo, /sys/devices/system/cpu; and where
 * it runs (sched_getcpu). Under nacre each count is the number of vCPUs.
 *
 * Build: gcc -static -O2 cpus.c -o cpus (or musl-gcc)
 * Prints one line per source: "NAME COUNT"; a source that fails prints -1.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/* The number of CPUs in a Linux CPU list such as "0-3" or "0,2-5". */
static int list_count(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, a, b;
    char sep;
    while (fscanf(f, "%d", &a) == 1) {
        b = a;
        if (fscanf(f, "%c", &sep) == 1 && sep == '-') {
            if (fscanf(f, "%d", &b) != 1)
                break;
            if (fscanf(f, "%c", &sep) != 1)
                sep = '\n';
        }
        n += b - a + 1;
        if (sep != ',')
            break;
    }
    fclose(f);
    return n;
}

static int cpuinfo_processors(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "processor", 9) == 0)
            n++;
    fclose(f);
    return n;
}

int main(void)
{
    cpu_set_t set;
    int affinity = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
    printf("sysconf_onln %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("sysconf_conf %ld\n", sysconf(_SC_NPROCESSORS_CONF));
    printf("get_nprocs %d\n", get_nprocs());
    printf("affinity %d\n", affinity);
    printf("cpuinfo %d\n", cpuinfo_processors());
    printf("online %d\n", list_count("/sys/devices/system/cpu/online"));
    printf("possible %d\n", list_count("/sys/devices/system/cpu/possible"));
    int cpu = sched_getcpu();
    printf("getcpu_in_range %d\n", cpu >= 0 && cpu < get_nprocs());
    return 0;
}
