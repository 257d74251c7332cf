/*
 * inherit.c - libctxvars-inherit.so, for programs that were not written
 * for ctxvars.  Preloaded (LD_PRELOAD=libctxvars-inherit.so), it replaces
 * pthread_create() with one that behaves like ctx_thread_create(): the new
 * thread starts in a copy of its creator's current context.  That is
 * Python's -X thread_inherit_context=1, for C.
 *
 * It is a separate library, not part of libctxvars.so, because interposing
 * pthread_create() is a choice for the person running the program, not for
 * every program that links ctxvars.  It uses only public ctxvars API
 * (ctx_thread_wrap/ctx_thread_start), so it shares the program's
 * libctxvars.so and its thread state rather than carrying a copy.
 */
#include "config.h"

#include <ctxvars.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *,
                         void *(*)(void *), void *);

static create_fn next_create;
static pthread_once_t next_once = PTHREAD_ONCE_INIT;

static void find_next_create(void)
{
    next_create = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
}

__attribute__((visibility("default"))) int
pthread_create(pthread_t *thread, const pthread_attr_t *attr,
               void *(*fn)(void *), void *arg)
{
    pthread_once(&next_once, find_next_create);
    if (next_create == NULL)
        return EAGAIN;
    /* ctx_thread_create() already wrapped its start routine: don't take a
     * second snapshot.  (glibc declares thread and fn nonnull.) */
    if (fn == ctx_thread_start)
        return next_create(thread, attr, fn, arg);
    void *start_arg;
    if (ctx_thread_wrap(fn, arg, &start_arg) != 0)
        return EAGAIN;
    int err = next_create(thread, attr, ctx_thread_start, start_arg);
    if (err != 0)
        ctx_thread_wrap_discard(start_arg);
    return err;
}
