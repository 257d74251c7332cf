/*
 * use_header.c - compiled by `make check` as strict C11 and as C++ (see
 * check-local in Makefile.am) to keep <ctxvars.h> clean for every user:
 * -Wall -Wextra -pedantic -Werror, extern "C", and CTX_WITH and CTX_ENTER
 * in both.
 */
#include <ctxvars.h>

int use_header(ctx_var_t *var);
int use_enter(ctx_context_t *ctx, ctx_var_t *var);

int use_header(ctx_var_t *var)
{
    int err = 0;
    CTX_WITH_STATUS(var, (void *)0, err) {
        ctx_context_t *ctx = 0;
        if (ctx_copy_context(&ctx) == 0)
            ctx_context_release(ctx);
    }
    return err;
}

int use_enter(ctx_context_t *ctx, ctx_var_t *var)
{
    int err = 0, seen = 0;
    CTX_ENTER_STATUS(ctx, err) {
        CTX_WITH(var, (void *)&seen) seen = 1;
    }
    CTX_ENTER(ctx) {
        if (seen)
            return 1;
    }
    return err;
}
