/*
 * ctxvars-uv.h - libuv's threadpool, carrying the caller's context.
 *
 * Link with libctxvars-uv (pkg-config --cflags --libs ctxvars-uv).
 *
 * An event-loop server keeps a context per connection and runs each of
 * the connection's callbacks in it (CTX_ENTER).  Work it sends to libuv's
 * threadpool with uv_queue_work() would lose that context, as it runs on
 * another thread; ctx_uv_queue_work() takes it along, as ctx_pool_submit()
 * does for ctxvars' own pools.
 */
#ifndef CTXVARS_UV_H
#define CTXVARS_UV_H

#include <ctxvars.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* uv_queue_work() in the caller's context.  A copy of the calling
 * thread's current context is taken now; work_cb(req) runs on libuv's
 * threadpool in a copy of that snapshot, and after_work_cb(req, status)
 * (may be NULL) on the loop thread in another copy of it, also when the
 * request was cancelled with uv_cancel(req) (status UV_ECANCELED).  So
 * each callback sees the variables as the caller had them at this call,
 * and neither's changes reach the caller, the other callback or the loop
 * thread's own context.  Contexts a callback leaves entered are exited
 * when it returns.
 *
 * req is the request libuv queues: uv_cancel(req) works as with
 * uv_queue_work(), and req->data stays yours (the library keeps its
 * state elsewhere).  Call it from the loop's thread, as uv_queue_work().
 * The snapshot is released when after_work_cb has returned (at once if
 * this call fails); after_work_cb may queue req again.
 *
 * Returns 0 or a negative libuv error: UV_EINVAL (loop, req or work_cb
 * NULL), UV_EBUSY (req is in flight already), UV_ENOMEM (nothing is
 * queued), or whatever uv_queue_work() returns.  If a threadpool thread runs out of memory on its first use
 * of ctxvars, work_cb cannot enter its context and is not called;
 * after_work_cb then gets status UV_ENOMEM.  Not async-signal-safe. */
CTX_EXTERN int ctx_uv_queue_work(uv_loop_t *loop, uv_work_t *req,
                                 uv_work_cb work_cb,
                                 uv_after_work_cb after_work_cb);

#ifdef __cplusplus
}
#endif
#endif /* CTXVARS_UV_H */
