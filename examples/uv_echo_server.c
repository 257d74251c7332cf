/*
 * uv_echo_server.c - the asyncio echo server that motivates contextvars
 * (Python's Doc/library/contextvars.rst), in C on libuv.
 *
 *     uv_echo_server --port N        (N = 0 picks a free port)
 *
 * Same command line and protocol as echo_server: it listens on 127.0.0.1
 * and first prints "listening on 127.0.0.1:PORT"; every line a client
 * sends is echoed back; an empty line ("\n" or "\r\n") ends the request
 * with "HTTP/1.1 200 OK", an empty header line and the body
 * "Good bye, client @ HOST:PORT", then the connection is closed.  SIGINT
 * or SIGTERM stops it cleanly (exit status 0).
 *
 * How the context travels:
 *
 *  - One thread runs the loop and every connection.  Each connection gets
 *    its own context when it is accepted, and the client's address is set
 *    in it once (client_addr).
 *  - Every callback of the connection (alloc, read, write, shutdown,
 *    close, the threadpool's after callback) runs inside that context with
 *    CTX_ENTER, which is what asyncio does for each Task: code it calls
 *    finds its client with ctx_var_get(), never by parameter.
 *  - render_goodbye() is the "slow" work and runs on libuv's threadpool,
 *    sent there with ctx_uv_queue_work(): the threadpool thread sees a copy
 *    of the connection's context, so render_goodbye() still finds
 *    client_addr without being told.
 *
 * Policies (as echo_server's):
 *  - Lines are capped at LINE_CAP (64 KiB): a longer line is echoed in
 *    LINE_CAP pieces as it arrives, and only its terminator ends it.
 *  - Bytes are bytes: NULs and other binary data are echoed unchanged.
 *  - Back-pressure: while more than OUT_HIGH bytes of replies wait to be
 *    sent, the connection is not read.
 *  - After the empty line anything else that client sent is ignored.  A
 *    client that disconnects or fails mid-line is dropped quietly (a line
 *    on stderr).
 *  - Out of file descriptors: libuv keeps a spare descriptor for that and
 *    accepts and closes the waiting clients, so they get an EOF instead of
 *    hanging; the server reports it once and carries on.
 */
#include <ctxvars-uv.h>

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define LINE_CAP (64 * 1024)  /* longest line held back whole */
#define OUT_HIGH (256 * 1024) /* stop reading above this much unsent */
#define READ_CHUNK (16 * 1024)

struct buf {
    char *data;
    size_t len, cap;
};

struct conn {
    uv_tcp_t tcp;                   /* tcp.data: this conn */
    char addr[INET_ADDRSTRLEN + 8];  /* "HOST:PORT": client_addr's value */
    ctx_context_t *ctx;             /* this connection's own context */
    struct buf in;                  /* the current line, not yet echoed */
    bool mid_line;                  /* a piece of this line went out */
    bool done_reading;              /* EOF, good-bye or failure */
    bool paused;                    /* back-pressure stopped the reads */
    bool rendering;                 /* the good-bye work is in flight */
    bool close_wanted;              /* close once the work is back */
    bool linked;                    /* on srv.conns */
    uv_work_t render;               /* render_goodbye on the threadpool */
    uv_shutdown_t shutdown;
    char body[128];                 /* the good-bye, rendered there */
    size_t body_len;
    struct conn *prev, *next;       /* all connections, for shutdown */
};

/* A reply in flight: libuv holds it until the write callback. */
struct reply {
    uv_write_t req;
    struct conn *c;
    char data[];
};

static struct {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigint, sigterm;
    ctx_var_t *client_addr; /* "HOST:PORT" of the current connection */
    struct conn *conns;
    bool shedding;          /* EMFILE was reported */
    bool stopping;
} srv;

/* ------------------------------------------------------------------
 * Code that runs inside a connection's context: it never receives the
 * client's address, it asks the context for it.
 * ---------------------------------------------------------------- */

static const char *client(void)
{
    return ctx_var_get_or(srv.client_addr, "unknown client");
}

static void log_client(const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "uv_echo_server: client @ %s: %s\n", client(), msg);
}

/* The asyncio example's render_goodbye(): the body of the answer. */
static size_t render_goodbye(char *body, size_t cap)
{
    int n = snprintf(body, cap, "Good bye, client @ %s\r\n", client());
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void conn_close(struct conn *c);
static void conn_resume(struct conn *c);

static void on_written(uv_write_t *req, int status)
{
    struct reply *r = (struct reply *)req;
    struct conn *c = r->c;

    CTX_ENTER(c->ctx) {
        if (status < 0 && status != UV_ECANCELED) {
            log_client("write failed: %s", uv_strerror(status));
            conn_close(c);
        } else if (c->paused && !c->done_reading && !srv.stopping &&
                   !uv_is_closing((uv_handle_t *)&c->tcp) &&
                   uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <
                       OUT_HIGH)
            conn_resume(c);
    }
    free(r);
}

/* Queues n reply bytes (copied); a connection that cannot get memory is
 * dropped. */
static void reply(struct conn *c, const void *bytes, size_t n)
{
    struct reply *r = malloc(sizeof *r + n);
    uv_buf_t b;
    int rc;

    if (r == NULL) {
        log_client("out of memory");
        conn_close(c);
        return;
    }
    r->c = c;
    memcpy(r->data, bytes, n);
    b = uv_buf_init(r->data, (unsigned)n);
    if ((rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1,
                       on_written)) != 0) {
        log_client("write: %s", uv_strerror(rc));
        free(r);
        conn_close(c);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    CTX_ENTER(c->ctx) {
        if (status < 0 && status != UV_ECANCELED)
            log_client("shutdown failed: %s", uv_strerror(status));
        conn_close(c);
    }
}

/* No more reading: send what is queued, then close. */
static void finish(struct conn *c)
{
    int rc;

    c->done_reading = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->shutdown.data = c;
    rc = uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc != 0)
        conn_close(c);
}

/* On the threadpool, in a copy of the connection's context. */
static void render_work(uv_work_t *req)
{
    struct conn *c = req->data;

    c->body_len = render_goodbye(c->body, sizeof c->body);
}

/* Back on the loop thread (in another copy of the same snapshot, and then
 * in the connection's own context, as every callback of it). */
static void render_done(uv_work_t *req, int status)
{
    static char status_line[] = "HTTP/1.1 200 OK\r\n", headers_end[] = "\r\n";
    struct conn *c = req->data;

    CTX_ENTER(c->ctx) {
        c->rendering = false;
        if (c->close_wanted || status != 0) {
            if (status != 0 && status != UV_ECANCELED)
                log_client("render_goodbye: %s", uv_strerror(status));
            c->close_wanted = false;
            conn_close(c);
            break;
        }
        reply(c, status_line, sizeof status_line - 1);
        reply(c, headers_end, sizeof headers_end - 1);
        reply(c, c->body, c->body_len);
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            finish(c);
    }
}

static void say_goodbye(struct conn *c)
{
    int rc;

    c->done_reading = true;
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return; /* a failed reply closed it: c->render must stay free */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->render.data = c;
    rc = ctx_uv_queue_work(srv.loop, &c->render, render_work, render_done);
    if (rc != 0) {
        log_client("ctx_uv_queue_work: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    c->rendering = true;
}

/* Echoes every complete line in c->in (one write for all of them) and
 * keeps the unfinished rest; an empty line ends the request. */
static void take_lines(struct conn *c)
{
    char *p = c->in.data, *end = c->in.data + c->in.len, *nl;
    bool bye = false;

    while (!bye && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        size_t n = (size_t)(nl - p) + 1;

        if (!c->mid_line && (n == 1 || (n == 2 && p[0] == '\r')))
            bye = true;
        else
            p += n;
        c->mid_line = false;
    }
    if (p > c->in.data)
        reply(c, c->in.data, (size_t)(p - c->in.data));
    if (bye) {
        c->in.len = 0;
        say_goodbye(c);
        return;
    }
    c->in.len = (size_t)(end - p);
    memmove(c->in.data, p, c->in.len);
    if (c->in.len == LINE_CAP) { /* the long-line policy: echo in pieces */
        reply(c, c->in.data, c->in.len);
        c->mid_line = true;
        c->in.len = 0;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;

    (void)suggested;
    *b = uv_buf_init(NULL, 0); /* libuv then reports UV_ENOBUFS */
    CTX_ENTER(c->ctx) {
        size_t room = LINE_CAP - c->in.len; /* > 0: take_lines saw to it */
        size_t want = room < READ_CHUNK ? room : READ_CHUNK;
        size_t cap = c->in.cap != 0 ? c->in.cap : 1024;

        while (cap - c->in.len < want)
            cap *= 2;
        if (cap != c->in.cap) {
            char *data = realloc(c->in.data, cap);
            if (data == NULL)
                break;
            c->in.data = data;
            c->in.cap = cap;
        }
        *b = uv_buf_init(c->in.data + c->in.len, (unsigned)want);
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;

    (void)b; /* it points into c->in */
    CTX_ENTER(c->ctx) {
        if (n > 0) {
            c->in.len += (size_t)n;
            take_lines(c);
            if (!c->done_reading && !uv_is_closing((uv_handle_t *)s) &&
                uv_stream_get_write_queue_size(s) > OUT_HIGH) {
                uv_read_stop(s);
                c->paused = true;
            }
        } else if (n == UV_EOF) {
            if (c->in.len > 0 || c->mid_line)
                log_client("left in the middle of a line");
            finish(c); /* the client is done; send what is queued */
        } else if (n < 0) {
            log_client("read failed: %s", uv_strerror((int)n));
            c->done_reading = true;
            conn_close(c);
        }
    }
}

static void conn_resume(struct conn *c)
{
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);

    c->paused = false;
    if (rc != 0) {
        log_client("read_start: %s", uv_strerror(rc));
        conn_close(c);
    }
}

/* ------------------------------------------------------------------
 * Connection bookkeeping.
 * ---------------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    free(c->in.data);
    /* client_addr's value is c->addr, borrowed: the context goes first. */
    ctx_context_release(c->ctx);
    free(c);
}

/* Closes now, or once the good-bye work is back (it holds c->render). */
static void conn_close(struct conn *c)
{
    if (c->linked) {
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            srv.conns = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        c->linked = false;
    }
    if (c->rendering) {
        c->close_wanted = true;
        return;
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Runs in the connection's new context, once, at accept time. */
static int set_client(struct conn *c)
{
    int err = 0, rc = -1;

    CTX_ENTER_STATUS(c->ctx, err) {
        rc = ctx_var_set(srv.client_addr, c->addr, NULL);
    }
    return err != 0 ? err : rc;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct conn *c;
    struct sockaddr_in peer;
    int len = sizeof peer, rc;
    char host[INET_ADDRSTRLEN];

    if (status < 0) {
        if ((status == UV_EMFILE || status == UV_ENFILE) && !srv.shedding)
            fprintf(stderr, "uv_echo_server: out of file descriptors, "
                            "turning clients away\n");
        srv.shedding = status == UV_EMFILE || status == UV_ENFILE;
        return;
    }
    srv.shedding = false;
    if ((c = calloc(1, sizeof *c)) == NULL ||
        uv_tcp_init(srv.loop, &c->tcp) != 0) {
        free(c);
        return; /* the connection waits in the backlog for the next try */
    }
    c->tcp.data = c;
    if ((rc = uv_accept(listener, (uv_stream_t *)&c->tcp)) != 0 ||
        (rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer,
                                 &len)) != 0 ||
        (rc = uv_ip4_name(&peer, host, sizeof host)) != 0) {
        /* ENOTCONN: the client left before we could even ask */
        fprintf(stderr, "uv_echo_server: accept: %s\n", uv_strerror(rc));
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    snprintf(c->addr, sizeof c->addr, "%s:%u", host, ntohs(peer.sin_port));
    if ((rc = ctx_context_new(&c->ctx)) != 0 || (rc = set_client(c)) != 0) {
        fprintf(stderr, "uv_echo_server: %s: no context (%s), dropped\n",
                c->addr, strerror(rc));
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    c->next = srv.conns;
    if (c->next != NULL)
        c->next->prev = c;
    srv.conns = c;
    c->linked = true;
    CTX_ENTER(c->ctx) conn_resume(c);
}

/* ------------------------------------------------------------------
 * Setup and teardown.
 * ---------------------------------------------------------------- */

/* Stop accepting, close every connection; uv_run() then returns once the
 * closes (and any good-bye still on the threadpool) are done. */
static void on_signal(uv_signal_t *sig, int signum)
{
    (void)sig;
    (void)signum;
    srv.stopping = true;
    uv_close((uv_handle_t *)&srv.listener, NULL);
    uv_close((uv_handle_t *)&srv.sigint, NULL);
    uv_close((uv_handle_t *)&srv.sigterm, NULL);
    while (srv.conns != NULL) /* each close takes one off the list */
        conn_close(srv.conns);
}

/* A thousand clients need more descriptors than the usual soft limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("uv_echo_server: setrlimit(RLIMIT_NOFILE)");
    }
}

static int setup(unsigned port)
{
    struct sockaddr_in sa;
    int len = sizeof sa, rc;

    signal(SIGPIPE, SIG_IGN); /* a vanished client is an EPIPE, not death */
    raise_fd_limit();
    srv.loop = uv_default_loop();
    if ((rc = ctx_var_create(&srv.client_addr, "client_addr", CTX_MISSING,
                             NULL)) != 0) {
        fprintf(stderr, "uv_echo_server: setup: %s\n", strerror(rc));
        return -1;
    }
    if ((rc = uv_ip4_addr("127.0.0.1", (int)port, &sa)) != 0 ||
        (rc = uv_tcp_init(srv.loop, &srv.listener)) != 0 ||
        (rc = uv_tcp_bind(&srv.listener, (struct sockaddr *)&sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&srv.listener, SOMAXCONN,
                        on_connection)) != 0 ||
        (rc = uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&sa,
                                 &len)) != 0 ||
        (rc = uv_signal_init(srv.loop, &srv.sigint)) != 0 ||
        (rc = uv_signal_init(srv.loop, &srv.sigterm)) != 0 ||
        (rc = uv_signal_start(&srv.sigint, on_signal, SIGINT)) != 0 ||
        (rc = uv_signal_start(&srv.sigterm, on_signal, SIGTERM)) != 0) {
        fprintf(stderr, "uv_echo_server: listen: %s\n", uv_strerror(rc));
        return -1;
    }
    printf("listening on 127.0.0.1:%u\n", ntohs(sa.sin_port));
    fflush(stdout); /* stdout may be a pipe: whoever waits needs it now */
    return 0;
}

static bool parse_port(int argc, char **argv, unsigned *port)
{
    char *end;

    if (argc != 3 || strcmp(argv[1], "--port") != 0)
        return false;
    unsigned long v = strtoul(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || v > 65535)
        return false;
    *port = (unsigned)v;
    return true;
}

int main(int argc, char **argv)
{
    unsigned port;

    if (!parse_port(argc, argv, &port)) {
        fprintf(stderr, "usage: %s --port N   (0 picks a free port)\n",
                argv[0]);
        return 2;
    }
    if (setup(port) != 0)
        return EXIT_FAILURE;
    int rc = uv_run(srv.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(srv.loop) != 0)
        rc = 1;
    ctx_var_release(srv.client_addr);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
