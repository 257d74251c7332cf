/*
 * request_id.c - the everyday use: a request id that follows the work.
 *
 * The main thread sets the id once per request and hands the request to a
 * pool.  The job, the functions it calls and a sub-job it starts all log
 * "[req-N] ..." by reading the variable: nobody passes the id along.  Lines
 * of different requests interleave, but each carries its own id (tests check
 * that against the user name, which does travel as a parameter).
 */
#include <ctxvars.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct request {
    const char *id;
    const char *user;
};

static ctx_var_t *request_var;
static ctx_pool_t *pool;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "request_id: %s failed (error %d)\n", what, rc);
        exit(EXIT_FAILURE);
    }
}

/* One printf per line, so lines from concurrent jobs never mix. */
static void log_line(const char *fmt, ...)
{
    const struct request *req = ctx_var_get_or(request_var, NULL);
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("[%s] %s\n", req != NULL ? req->id : "main", msg);
}

static void load_profile(const char *user)
{
    log_line("loading the profile of %s", user);
}

static void *write_audit(void *user)
{
    log_line("audit: page served to %s", (const char *)user);
    return NULL;
}

static void *handle_request(void *user)
{
    ctx_future_t *audit;

    log_line("handling a request from %s", (const char *)user);
    load_profile(user);
    /* The sub-job starts from a copy of this job's context: same id. */
    check(ctx_pool_submit(pool, write_audit, user, &audit), "ctx_pool_submit");
    check(ctx_future_wait(audit, NULL), "ctx_future_wait");
    ctx_future_release(audit);
    log_line("done with %s", (const char *)user);
    return NULL;
}

int main(void)
{
    static struct request reqs[] = {
        {"req-1", "alice"}, {"req-2", "bob"},  {"req-3", "carol"},
        {"req-4", "dave"},  {"req-5", "erin"}, {"req-6", "frank"},
    };
    enum { NREQ = sizeof reqs / sizeof reqs[0] };
    ctx_future_t *done[NREQ];

    check(ctx_var_create(&request_var, "request_id", NULL, NULL),
          "ctx_var_create");
    check(ctx_pool_create(&pool, 0), "ctx_pool_create");
    for (int i = 0; i < NREQ; i++) {
        ctx_token_t *token;

        check(ctx_var_set(request_var, &reqs[i], &token), "ctx_var_set");
        check(ctx_pool_submit(pool, handle_request, (void *)reqs[i].user,
                              &done[i]), "ctx_pool_submit");
        check(ctx_var_reset(request_var, token), "ctx_var_reset");
        ctx_token_release(token);
    }
    for (int i = 0; i < NREQ; i++) {
        check(ctx_future_wait(done[i], NULL), "ctx_future_wait");
        ctx_future_release(done[i]);
    }
    log_line("all %d requests served", NREQ);
    check(ctx_pool_destroy(pool), "ctx_pool_destroy");
    ctx_var_release(request_var);
    return EXIT_SUCCESS;
}
