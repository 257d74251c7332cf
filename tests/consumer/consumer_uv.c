/*
 * consumer_uv.c - as consumer.c, for libctxvars-uv: built by `make
 * installcheck` against the installed library with pkg-config
 * (ctxvars-uv.pc) and with CMake (ctxvars::ctxvars-uv); the work and its
 * after callback must both see the caller's value.
 */
/* <uv.h> needs POSIX types (pthread_rwlock_t) that strict -std=c11 hides. */
#define _POSIX_C_SOURCE 200809L
#include <ctxvars-uv.h>

#include <stdio.h>
#include <string.h>

static ctx_var_t *who;
static const char *in_work, *in_after;

static void work(uv_work_t *req)
{
    (void)req;
    in_work = ctx_var_get_or(who, "nobody");
}

static void after(uv_work_t *req, int status)
{
    (void)req;
    if (status == 0)
        in_after = ctx_var_get_or(who, "nobody");
}

int main(void)
{
    uv_loop_t loop;
    uv_work_t req;

    if (uv_loop_init(&loop) != 0 ||
        ctx_var_create(&who, "who", CTX_MISSING, NULL) != 0 ||
        ctx_var_set(who, "consumer", NULL) != 0 ||
        ctx_uv_queue_work(&loop, &req, work, after) != 0 ||
        uv_run(&loop, UV_RUN_DEFAULT) != 0 || uv_loop_close(&loop) != 0)
        return 1;
    ctx_var_release(who);
    if (in_work == NULL || strcmp(in_work, "consumer") != 0 ||
        in_after == NULL || strcmp(in_after, "consumer") != 0)
        return 1;
    puts("consumer_uv: ok");
    return 0;
}
