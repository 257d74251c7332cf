/*
 * peers.h - what the peers table (bench/peers.c) shares with oneTBB's side
 * of it (bench/peers_tbb.cc).  Clean as C and as C++, so it must not pull
 * in bench.h (stdatomic.h is C only).
 */
#ifndef CTXBENCH_PEERS_H
#define CTXBENCH_PEERS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PEERS_FIB_N 30      /* fork-join: fib(30) */
#define PEERS_FIB_CUTOFF 12 /* a task per call above this n */
#define PEERS_FANOUT 32     /* sub-jobs per request */
#define PEERS_REQUESTS 300  /* requests per fan-out round */

/* Jobs per flat-throughput round: 1,000,000 (100,000 with --quick). */
uint64_t peers_flat_jobs(void);
/* fib(n) without tasks, for the leaves. */
long peers_fib_serial(int n);
/* ~2 us of real work (calibrated at start), the same for every pool. */
uint64_t peers_work(uint64_t seed);
/* Die unless a round computed what it should. */
void peers_check_fib(long r);
void peers_check_fanout(const uint64_t *sums, int n);

/* A countdown the last job posts (bench.h's countdown_t, opaque here). */
typedef struct peers_done peers_done_t;
peers_done_t *peers_done_create(void);
void peers_done_destroy(peers_done_t *d);
void peers_done_arm(peers_done_t *d, uint64_t n);
void peers_done_wait(peers_done_t *d);
void peers_done_hit(peers_done_t *d);

/* peers_tbb.cc: NULL from create when built without oneTBB. */
typedef struct tbb_peer tbb_peer_t;
tbb_peer_t *tbb_peer_create(unsigned nthreads);
void tbb_peer_destroy(tbb_peer_t *p);
const char *tbb_version_string(void);
void tbb_flat(void *peer, uint64_t n);     /* n rounds */
void tbb_forkjoin(void *peer, uint64_t n); /* n fib(30) */
void tbb_fanout(void *peer, uint64_t n);   /* n rounds of 300 requests */

#ifdef __cplusplus
}
#endif

#endif
