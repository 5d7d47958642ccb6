/*
 * One thread waits for stdin while another keeps working: the worker must run
 * while the reader waits (the input arrives late).
 *
 * Build: gcc -static -O2 stdin_threads.c -o stdin_threads
 * Prints: "read N, worker ran while waiting: 1".
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdatomic.h>
static atomic_long ticks; static atomic_int done;
static void *worker(void *a) { while (!atomic_load(&done)) { usleep(1000); atomic_fetch_add(&ticks, 1); } return 0; }
int main(void) {
    pthread_t t; pthread_create(&t, 0, worker, 0);
    char buf[64]; ssize_t n = read(0, buf, sizeof buf);
    atomic_store(&done, 1); pthread_join(t, 0);
    printf("read %zd, worker ran while waiting: %d\n", n, atomic_load(&ticks) > 20);
    return 0; }
