/*
 * baselines.c - what the library is measured against: the primitives it
 * replaces (pthread_getspecific, pthread_create) or costs like (one small
 * malloc+free), and two thread pools running the very same jobs.
 *
 * The plain pool is the textbook design every hand-written pool starts
 * from: one mutex, one condition variable, a linked FIFO of malloc'ed
 * jobs, a signal only when a worker is idle (as libuv does).  Beating it is
 * the bar for "the snapshot costs nothing you would notice".
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>

#ifdef HAVE_GLIB
#include <glib.h>
#endif

void base_getspecific(void *arg, uint64_t n)
{
    pthread_key_t key = *(const pthread_key_t *)arg;
    for (uint64_t i = 0; i < n; i++)
        SINK(pthread_getspecific(key));
}

void base_malloc_free(void *arg, uint64_t n)
{
    (void)arg;
    for (uint64_t i = 0; i < n; i++) {
        void *p = malloc(64);
        /* The pointer escapes into an asm the compiler cannot see through,
         * which stops it from eliding the malloc/free pair. */
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

static void *trivial(void *arg)
{
    return arg;
}

void base_pthread_create(void *arg, uint64_t n)
{
    (void)arg;
    for (uint64_t i = 0; i < n; i++) {
        pthread_t t;
        int err = pthread_create(&t, NULL, trivial, NULL);
        bench_check(err, "pthread_create");
        pthread_join(t, NULL);
    }
}

/* ------------------------------------------------------------------
 * The plain mutex + condvar pool
 * ---------------------------------------------------------------- */

struct plain_job {
    struct plain_job *next;
    void *(*fn)(void *);
    void *arg;
};

struct plain_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct plain_job *head, **tail;
    unsigned idle;
    bool stop;
    unsigned nthreads;
    countdown_t cd;
    pthread_t threads[];
};

static struct plain_job *plain_take(plain_pool_t *p)
{
    while (p->head == NULL && !p->stop) {
        p->idle++;
        pthread_cond_wait(&p->cv, &p->mu);
        p->idle--;
    }
    struct plain_job *j = p->head;
    if (j != NULL) {
        p->head = j->next;
        if (p->head == NULL)
            p->tail = &p->head;
    }
    return j;
}

static void *plain_worker(void *arg)
{
    plain_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct plain_job *j = plain_take(p);
        if (j == NULL)
            break;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void plain_submit(plain_pool_t *p, void *(*fn)(void *), void *arg)
{
    struct plain_job *j = malloc(sizeof *j);
    if (j == NULL)
        bench_die("malloc", ENOMEM);
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&p->mu);
    *p->tail = j;
    p->tail = &j->next;
    if (p->idle > 0)
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

plain_pool_t *plain_pool_create(unsigned nthreads)
{
    plain_pool_t *p = calloc(1, sizeof *p + nthreads * sizeof(pthread_t));
    if (p == NULL)
        bench_die("calloc", ENOMEM);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->tail = &p->head;
    p->nthreads = nthreads;
    countdown_init(&p->cd);
    for (unsigned i = 0; i < nthreads; i++)
        bench_check(pthread_create(&p->threads[i], NULL, plain_worker, p),
                    "pthread_create");
    return p;
}

void plain_pool_destroy(plain_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    countdown_destroy(&p->cd);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void base_plain_pool(void *arg, uint64_t n)
{
    plain_pool_t *p = arg;
    countdown_arm(&p->cd, n);
    for (uint64_t i = 0; i < n; i++)
        plain_submit(p, countdown_job, &p->cd);
    countdown_wait(&p->cd);
}

/* ------------------------------------------------------------------
 * GLib's GThreadPool
 * ---------------------------------------------------------------- */
#ifdef HAVE_GLIB

struct glib_pool {
    GThreadPool *pool;
    countdown_t cd;
};

static void glib_job(gpointer data, gpointer user_data)
{
    (void)user_data;
    countdown_job(data);
}

glib_pool_t *glib_pool_create(unsigned nthreads)
{
    glib_pool_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        bench_die("calloc", ENOMEM);
    countdown_init(&p->cd);
    GError *error = NULL;
    p->pool = g_thread_pool_new(glib_job, NULL, (gint)nthreads, TRUE, &error);
    if (p->pool == NULL)
        bench_die("g_thread_pool_new", EAGAIN);
    return p;
}

void glib_pool_destroy(glib_pool_t *p)
{
    if (p == NULL)
        return;
    g_thread_pool_free(p->pool, FALSE, TRUE);
    countdown_destroy(&p->cd);
    free(p);
}

void base_glib_pool(void *arg, uint64_t n)
{
    glib_pool_t *p = arg;
    countdown_arm(&p->cd, n);
    for (uint64_t i = 0; i < n; i++)
        g_thread_pool_push(p->pool, &p->cd, NULL);
    countdown_wait(&p->cd);
}

const char *glib_version_string(void)
{
    static char buf[32];
    g_snprintf(buf, sizeof buf, "%u.%u.%u", glib_major_version,
               glib_minor_version, glib_micro_version);
    return buf;
}

#else /* !HAVE_GLIB */

glib_pool_t *glib_pool_create(unsigned nthreads)
{
    (void)nthreads;
    return NULL;
}

void glib_pool_destroy(glib_pool_t *p)
{
    (void)p;
}

void base_glib_pool(void *arg, uint64_t n)
{
    (void)arg;
    (void)n;
}

const char *glib_version_string(void)
{
    return NULL;
}

#endif
