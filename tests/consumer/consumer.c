/*
 * consumer.c - a program from outside the tree, built by `make
 * installcheck` against the *installed* library with nothing but
 * pkg-config: proves the header, the .pc file and the shared library
 * install together and work.
 */
#include <ctxvars.h>

#include <stdio.h>
#include <string.h>

static ctx_var_t *who;

static void *child(void *unused)
{
    (void)unused;
    return ctx_var_get_or(who, "nobody");
}

int main(void)
{
    pthread_t t;
    void *seen = NULL;
    if (ctx_var_create(&who, "who", CTX_MISSING, NULL) != 0 ||
        ctx_var_set(who, "consumer", NULL) != 0 ||
        ctx_thread_create(&t, NULL, child, NULL) != 0 ||
        pthread_join(t, &seen) != 0)
        return 1;
    ctx_var_release(who);
    if (seen == NULL || strcmp(seen, "consumer") != 0)
        return 1;
    puts("consumer: ok");
    return 0;
}
