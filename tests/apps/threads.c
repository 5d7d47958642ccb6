/*
 * POSIX threads as a static Linux program uses them: creation and join, mutexes,
 * condition variables (plain and timed), barriers, thread-local storage with
 * destructors, detached threads, many more threads than CPUs, thread ids, yields,
 * pthread_exit, and a signal sent to one particular thread. Run natively and under
 * nacre, it must print the same.
 *
 * Build: gcc -static -O2 -pthread threads.c -o threads (or musl-gcc)
 * Usage: threads            run every check: "ok NAME" or "FAIL NAME: DETAIL" per
 *                           line; exit 0 when all passed
 *        threads blocking   only the checks whose threads block or yield (none
 *                           needs the kernel to preempt a thread that spins)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int failures;
static char detail[256];
#define BAD(...) (snprintf(detail, sizeof detail, __VA_ARGS__), detail)

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

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* --- create, join, return values, mutex ------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *count_up(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        if (i % 64 == 0)
            sched_yield();
    }
    return (void *)(n * 3);
}

static const char *check_mutex(void)
{
    pthread_t t[8];
    counter = 0;
    for (int i = 0; i < 8; i++)
        if (pthread_create(&t[i], NULL, count_up, (void *)2000L))
            return BAD("pthread_create %d", i);
    long sum = 0;
    for (int i = 0; i < 8; i++) {
        void *r;
        if (pthread_join(t[i], &r))
            return BAD("pthread_join %d", i);
        sum += (long)r;
    }
    if (counter != 16000 || sum != 8 * 6000)
        return BAD("counter %ld, results %ld", counter, sum);
    return NULL;
}

/* --- thread ids ------------------------------------------------------------ */

static pid_t child_tid;

static void *record_tid(void *arg)
{
    (void)arg;
    child_tid = gettid_();
    return NULL;
}

static const char *check_tids(void)
{
    if (gettid_() != getpid())
        return BAD("main tid %d, pid %d", gettid_(), getpid());
    pthread_t t;
    pthread_create(&t, NULL, record_tid, NULL);
    pthread_join(t, NULL);
    if (child_tid <= 0 || child_tid == getpid())
        return BAD("child tid %d, pid %d", child_tid, getpid());
    return NULL;
}

/* --- condition variables --------------------------------------------------- */

static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int go_flag, arrived;

static void *wait_for_go(void *arg)
{
    pthread_mutex_lock(&lock);
    arrived++;
    pthread_cond_broadcast(&cond);
    while (!go_flag)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return arg;
}

static const char *check_condvar(void)
{
    pthread_t t[6];
    go_flag = arrived = 0;
    for (long i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, wait_for_go, (void *)i);
    pthread_mutex_lock(&lock);
    while (arrived < 6)
        pthread_cond_wait(&cond, &lock);
    go_flag = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (long i = 0; i < 6; i++) {
        void *r;
        pthread_join(t[i], &r);
        if ((long)r != i)
            return BAD("thread %ld returned %ld", i, (long)r);
    }
    return NULL;
}

static const char *check_timedwait(void)
{
    struct timespec start, deadline, end;
    clock_gettime(CLOCK_REALTIME, &start);
    deadline = start;
    deadline.tv_nsec += 30 * 1000 * 1000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&lock);
    int r = pthread_cond_timedwait(&cond, &lock, &deadline);
    pthread_mutex_unlock(&lock);
    clock_gettime(CLOCK_REALTIME, &end);
    long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    if (r != ETIMEDOUT)
        return BAD("pthread_cond_timedwait returned %d", r);
    if (ms < 29)
        return BAD("woke after %ld ms", ms);
    return NULL;
}

/* --- barriers -------------------------------------------------------------- */

static pthread_barrier_t barrier;
static atomic_int phase_count[10];

static void *barrier_rounds(void *arg)
{
    for (int round = 0; round < 10; round++) {
        atomic_fetch_add(&phase_count[round], 1);
        pthread_barrier_wait(&barrier);
        if (atomic_load(&phase_count[round]) != 5)
            return (void *)1;
    }
    return arg;
}

static const char *check_barrier(void)
{
    pthread_t t[4];
    pthread_barrier_init(&barrier, NULL, 5);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, barrier_rounds, NULL);
    void *mine = barrier_rounds(NULL);
    int bad = mine != NULL;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    pthread_barrier_destroy(&barrier);
    return bad ? "a thread passed a barrier before all arrived" : NULL;
}

/* --- thread-local storage and destructors ---------------------------------- */

static __thread long tls_value = 11;
static pthread_key_t key;
static atomic_long destructed;

static void destructor(void *p) { atomic_fetch_add(&destructed, (long)(intptr_t)p); }

static void *use_tls(void *arg)
{
    long id = (long)arg;
    if (tls_value != 11)
        return (void *)-1;
    tls_value = 100 + id;
    pthread_setspecific(key, (void *)(intptr_t)(id + 1));
    sched_yield();
    return (void *)tls_value;
}

static const char *check_tls(void)
{
    pthread_key_create(&key, destructor);
    pthread_t t[5];
    for (long i = 0; i < 5; i++)
        pthread_create(&t[i], NULL, use_tls, (void *)i);
    for (long i = 0; i < 5; i++) {
        void *r;
        pthread_join(t[i], &r);
        if ((long)r != 100 + i)
            return BAD("thread %ld saw tls %ld", i, (long)r);
    }
    if (tls_value != 11)
        return BAD("main's tls changed to %ld", tls_value);
    if (atomic_load(&destructed) != 1 + 2 + 3 + 4 + 5)
        return BAD("destructors summed %ld", atomic_load(&destructed));
    return NULL;
}

/* --- detached threads ------------------------------------------------------ */

static int detached_done;

static void *detached(void *arg)
{
    pthread_mutex_lock(&lock);
    detached_done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return arg;
}

static const char *check_detached(void)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int round = 0; round < 3; round++) {
        detached_done = 0;
        for (int i = 0; i < 10; i++) {
            pthread_t t;
            if (pthread_create(&t, &attr, detached, NULL))
                return BAD("pthread_create %d", i);
        }
        pthread_mutex_lock(&lock);
        while (detached_done < 10)
            pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* --- many threads: more than CPUs, all alive at once ----------------------- */

#define MANY 160
static atomic_int alive;
static pthread_barrier_t all_alive;

static void *many(void *arg)
{
    atomic_fetch_add(&alive, 1);
    pthread_barrier_wait(&all_alive);
    return (void *)((long)arg * 2);
}

static const char *check_many(void)
{
    static pthread_t t[MANY];
    pthread_barrier_init(&all_alive, NULL, MANY + 1);
    for (long i = 0; i < MANY; i++)
        if (pthread_create(&t[i], NULL, many, (void *)i))
            return BAD("pthread_create %ld", i);
    pthread_barrier_wait(&all_alive);
    long sum = 0;
    for (long i = 0; i < MANY; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    if (atomic_load(&alive) != MANY || sum != (long)MANY * (MANY - 1))
        return BAD("alive %d, sum %ld", atomic_load(&alive), sum);
    return NULL;
}

/* --- pthread_exit from a nested call --------------------------------------- */

static void nested_exit(void) { pthread_exit((void *)77); }

static void *exits_early(void *arg)
{
    (void)arg;
    nested_exit();
    return NULL;
}

static const char *check_pthread_exit(void)
{
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, exits_early, NULL);
    pthread_join(t, &r);
    return (long)r == 77 ? NULL : BAD("joined %ld", (long)r);
}

/* --- tight loops: threads that never enter the kernel are preempted -------- */

static atomic_int spin_stop, spinning;

static void *spin_until_told(void *arg)
{
    long n = 0;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        if (n++ == 0)
            atomic_fetch_add(&spinning, 1);
    return (void *)(n > 0 ? 1L : 0L);
}

/* Waits (yielding) until both spinners run, so that a spinner whose CPU the host
 * does not run for a while is not taken for one that was never scheduled; on one
 * CPU that wait itself needs the spinners preempted. */
static void *tell_after_a_while(void *arg)
{
    (void)arg;
    while (atomic_load(&spinning) < 2)
        sched_yield();
    usleep(30000);
    atomic_store(&spin_stop, 1);
    return NULL;
}

static const char *check_tight_loops(void)
{
    pthread_t t[3];
    atomic_store(&spin_stop, 0);
    atomic_store(&spinning, 0);
    pthread_create(&t[0], NULL, spin_until_told, NULL);
    pthread_create(&t[1], NULL, spin_until_told, NULL);
    pthread_create(&t[2], NULL, tell_after_a_while, NULL);
    long spun = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        spun += (long)r;
    }
    return spun == 2 ? NULL : BAD("%ld of 2 spinners spun", spun);
}

/* --- vector registers survive preemption ----------------------------------- */

/* Keep a pattern in a vector register across a long loop with no calls or
 * syscalls (so any switch in between is a preemption), then compare: the whole
 * 256-bit ymm7 where the CPU has AVX, else xmm7. */
__attribute__((target("avx"))) static void hold_ymm(uint64_t in[4], uint64_t out[4])
{
    __asm__ volatile("vmovdqu (%1), %%ymm7\n"
                     "mov $3000000, %%ecx\n"
                     "1: dec %%ecx\n"
                     "jnz 1b\n"
                     "vmovdqu %%ymm7, (%0)\n"
                     "vzeroupper\n"
                     :
                     : "r"(out), "r"(in)
                     : "ecx", "xmm7", "memory");
}

static void hold_xmm(uint64_t in[4], uint64_t out[4])
{
    __asm__ volatile("movdqu (%1), %%xmm7\n"
                     "mov $3000000, %%ecx\n"
                     "1: dec %%ecx\n"
                     "jnz 1b\n"
                     "movdqu %%xmm7, (%0)\n"
                     :
                     : "r"(out), "r"(in)
                     : "ecx", "xmm7", "memory");
    out[2] = in[2];
    out[3] = in[3];
}

static void *hold_vectors(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL;
    uint64_t in[4] = {seed, seed ^ 1, seed ^ 2, seed ^ 3}, out[4];
    int avx = __builtin_cpu_supports("avx");
    for (int round = 0; round < 40; round++) {
        if (avx)
            hold_ymm(in, out);
        else
            hold_xmm(in, out);
        if (memcmp(in, out, sizeof in))
            return (void *)1;
        in[0]++;
    }
    return NULL;
}

static const char *check_vector_state(void)
{
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, hold_vectors, (void *)(i + 1));
    long bad = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long)r;
    }
    return bad ? BAD("%ld threads lost their vector registers", bad) : NULL;
}

/* --- a robust mutex whose owner exits -------------------------------------- */

static pthread_mutex_t robust;

static void *lock_and_exit(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&robust);
    return NULL;
}

static const char *check_robust(void)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &attr);
    pthread_t t;
    pthread_create(&t, NULL, lock_and_exit, NULL);
    pthread_join(t, NULL);
    int r = pthread_mutex_lock(&robust);
    if (r != EOWNERDEAD)
        return BAD("locking after the owner exited returned %d, not EOWNERDEAD", r);
    pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    r = pthread_mutex_lock(&robust);
    pthread_mutex_unlock(&robust);
    return r == 0 ? NULL : BAD("relocking a consistent mutex returned %d", r);
}

/* --- a signal to one particular thread ------------------------------------- */

static volatile pid_t handled_in;
static atomic_int target_ready, target_stop;
static pid_t target_tid;

static void on_usr1(int sig)
{
    (void)sig;
    handled_in = gettid_();
}

static void *signal_target(void *arg)
{
    (void)arg;
    target_tid = gettid_();
    atomic_store(&target_ready, 1);
    while (!atomic_load(&target_stop) && !handled_in)
        usleep(1000);
    return NULL;
}

static const char *check_tgkill(void)
{
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, signal_target, NULL);
    while (!atomic_load(&target_ready))
        sched_yield();
    if (syscall(SYS_tgkill, getpid(), target_tid, SIGUSR1))
        return BAD("tgkill: %s", strerror(errno));
    for (int i = 0; i < 2000 && !handled_in; i++)
        usleep(1000);
    atomic_store(&target_stop, 1);
    pthread_join(t, NULL);
    if (handled_in != target_tid)
        return BAD("handled in %d, sent to %d", handled_in, target_tid);
    if (syscall(SYS_tgkill, getpid(), 999999, SIGUSR1) != -1 || errno != ESRCH)
        return "tgkill of a thread that does not exist did not fail with ESRCH";
    return NULL;
}

int main(int argc, char **argv)
{
    int blocking_only = argc > 1 && strcmp(argv[1], "blocking") == 0;
    report("tids", check_tids());
    report("mutex", check_mutex());
    report("condvar", check_condvar());
    report("timedwait", check_timedwait());
    report("barrier", check_barrier());
    report("tls_destructors", check_tls());
    report("detached", check_detached());
    report("many_threads", check_many());
    report("pthread_exit", check_pthread_exit());
    report("robust_mutex", check_robust());
    if (!blocking_only) {
        report("tight_loops", check_tight_loops());
        report("vector_state", check_vector_state());
    }
    report("tgkill_thread", check_tgkill());
    return failures ? 1 : 0;
}
