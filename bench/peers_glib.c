/*
 * peers_glib.c - GLib's side of the peers table (bench/peers.c): one
 * GThreadPool whose items say what they are.  A GThreadPool job cannot
 * wait for another (with every worker waiting nothing runs), so there is
 * no fork-join here, and a fan-out request is a continuation: its last
 * sub-job finishes it.
 */
#include "bench.h"
#include "peers.h"

#include <errno.h>
#include <stdlib.h>

#ifdef HAVE_GLIB
#include <glib.h>

typedef enum { G_FLAT, G_REQUEST, G_SUB } gkind_t;

typedef struct greq greq_t;
typedef struct {
    gkind_t kind;
    greq_t *rq; /* G_SUB */
    int i;
} gitem_t;

struct greq {
    gitem_t self;
    gitem_t sub[PEERS_FANOUT];
    uint64_t part[PEERS_FANOUT];
    atomic_int left;
    uint64_t *sum;
};

struct glib_peer {
    GThreadPool *pool;
    countdown_t cd;
    greq_t rq[PEERS_REQUESTS];
    uint64_t sums[PEERS_REQUESTS];
};
typedef struct glib_peer gpeer_t;

static gitem_t gflat = {G_FLAT, NULL, 0};

static void glib_item(gpointer data, gpointer user)
{
    gitem_t *it = data;
    gpeer_t *p = user;
    switch (it->kind) {
    case G_FLAT:
        countdown_job(&p->cd);
        break;
    case G_REQUEST: {
        greq_t *rq = (greq_t *)it;
        atomic_store_explicit(&rq->left, PEERS_FANOUT, memory_order_relaxed);
        for (int i = 0; i < PEERS_FANOUT; i++) {
            rq->sub[i] = (gitem_t){G_SUB, rq, i};
            g_thread_pool_push(p->pool, &rq->sub[i], NULL);
        }
        break;
    }
    case G_SUB: {
        greq_t *rq = it->rq;
        rq->part[it->i] = peers_work((uint64_t)it->i);
        if (atomic_fetch_sub_explicit(&rq->left, 1, memory_order_acq_rel) ==
            1) { /* the last: the request's continuation */
            uint64_t sum = 0;
            for (int i = 0; i < PEERS_FANOUT; i++)
                sum += rq->part[i];
            *rq->sum = sum;
            countdown_job(&p->cd);
        }
        break;
    }
    }
}

glib_peer_t *glib_peer_create(unsigned n)
{
    gpeer_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        bench_die("calloc", ENOMEM);
    countdown_init(&p->cd);
    p->pool = g_thread_pool_new(glib_item, p, (gint)n, TRUE, NULL);
    if (p->pool == NULL)
        bench_die("g_thread_pool_new", EAGAIN);
    return p;
}

void glib_peer_destroy(glib_peer_t *p)
{
    if (p == NULL)
        return;
    g_thread_pool_free(p->pool, FALSE, TRUE);
    countdown_destroy(&p->cd);
    free(p);
}

void glib_peer_flat(void *arg, uint64_t n)
{
    gpeer_t *p = arg;
    for (uint64_t b = 0; b < n; b++) {
        uint64_t jobs = peers_flat_jobs();
        countdown_arm(&p->cd, jobs);
        for (uint64_t i = 0; i < jobs; i++)
            g_thread_pool_push(p->pool, &gflat, NULL);
        countdown_wait(&p->cd);
    }
}

void glib_peer_fanout(void *arg, uint64_t n)
{
    gpeer_t *p = arg;
    for (uint64_t b = 0; b < n; b++) {
        countdown_arm(&p->cd, PEERS_REQUESTS);
        for (int i = 0; i < PEERS_REQUESTS; i++) {
            p->rq[i].self.kind = G_REQUEST;
            p->rq[i].sum = &p->sums[i];
            g_thread_pool_push(p->pool, &p->rq[i].self, NULL);
        }
        countdown_wait(&p->cd);
        peers_check_fanout(p->sums, PEERS_REQUESTS);
    }
}

#else
static bool glib_create(unsigned n)
{
    (void)n;
    return false;
}
static void glib_destroy(void) {}
static void *gpeer;
void glib_peer_flat(void *arg, uint64_t n) { (void)arg, (void)n; }
void glib_peer_fanout(void *arg, uint64_t n) { (void)arg, (void)n; }
#endif

