/*
 * token.c - tokens: what ctx_var_set() hands back so ctx_var_reset() can
 * undo it.  A token holds its variable, its old value and its context;
 * holding the context (not just remembering its address) is what makes a
 * new context at a reused address count as "another context".
 */
#include "config.h"

#include "internal.h"


ctx_token_t *ctx__token_alloc(void)
{
    return ctx__spare_take(CTX__SPARE_TOKEN, sizeof(ctx_token_t));
}

void ctx__token_fill(ctx_token_t *t, ctx_var_t *var, ctx_context_t *ctx,
                     void *old_value)
{
    CTX__SET_MAGIC(t, CTX__MAGIC_TOKEN);
    atomic_init(&t->used, false);
    t->var = ctx_var_retain(var);
    t->ctx = ctx_context_retain(ctx);
    t->old_value = old_value; /* the caller's hold becomes the token's */
}

ctx_var_t *ctx_token_var(const ctx_token_t *token)
{
    return token != NULL ? token->var : NULL;
}

void *ctx_token_old_value(const ctx_token_t *token)
{
    return token != NULL ? token->old_value : CTX_MISSING;
}

bool ctx_token_used(const ctx_token_t *token)
{
    if (token == NULL)
        return false;
    CTX__CHAOS(); /* races a reset on the token's own thread */
    return atomic_load_explicit(&((ctx_token_t *)token)->used,
                                memory_order_relaxed);
}

void ctx_token_release(ctx_token_t *token)
{
    if (token == NULL)
        return;
    CTX__CHECK_MAGIC(token, CTX__MAGIC_TOKEN, "token");
    CTX__SET_MAGIC(token, CTX__MAGIC_DEAD);
    ctx__value_release(token->var, token->old_value);
    ctx_var_release(token->var);
    CTX__CHAOS(); /* the context's last reference may be ours or not */
    ctx_context_release(token->ctx);
    ctx__spare_give(CTX__SPARE_TOKEN, token);
}
