/*
 * inherit_prog.c - an "unmodified" program for test_inherit: it uses
 * ctxvars but starts its threads with plain pthread_create(), as code
 * written before ctxvars (or a library it calls) would.  Run as is, the
 * thread sees nothing; run with LD_PRELOAD=libctxvars-inherit.so, it sees
 * a copy of its creator's context.  A thread from ctx_thread_create() sees
 * the value either way, and exactly once wrapped.
 */
#include <ctxvars.h>

#include <pthread.h>
#include <stdio.h>

static ctx_var_t *user;

static void *show(void *label)
{
    printf("%s: %s\n", (const char *)label,
           (const char *)ctx_var_get_or(user, "(unset)"));
    ctx_var_set(user, "changed-by-child", NULL);
    return NULL;
}

int main(void)
{
    pthread_t t;
    if (ctx_var_create(&user, "user", CTX_MISSING, NULL) != 0 ||
        ctx_var_set(user, "alice", NULL) != 0)
        return 1;
    if (pthread_create(&t, NULL, show, "pthread_create") != 0)
        return 1;
    ctx_var_set(user, "bob", NULL); /* after the create: must not leak in */
    pthread_join(t, NULL);
    if (ctx_thread_create(&t, NULL, show, "ctx_thread_create") != 0)
        return 1;
    pthread_join(t, NULL);
    printf("main: %s\n", (const char *)ctx_var_get_or(user, "(unset)"));
    ctx_var_release(user);
    return 0;
}
