/*
 * echo_server.c - a line echo server in which every connection carries its
 * own context.
 *
 *     echo_server --port N        (N = 0 picks a free port)
 *
 * It listens on 127.0.0.1 and first prints "listening on 127.0.0.1:PORT".
 * Every line a client sends is echoed back.  An empty line ("\n" or "\r\n")
 * is answered with "Good bye, client @ HOST:PORT\r\n", then the connection
 * is closed.  SIGINT or SIGTERM stops it cleanly (exit status 0).
 *
 * How it works, and why:
 *
 *  - The main thread owns an epoll set and only waits, accepts and
 *    dispatches.  Connections are registered with EPOLLONESHOT: an event
 *    disarms the fd, so at most one job per connection is ever in flight,
 *    and that job re-arms the fd when it has finished.
 *  - Each readiness event becomes one job on a small pool (one worker per
 *    CPU).  A job does one non-blocking step -- send pending replies, read
 *    what has arrived, echo the complete lines -- and never waits for the
 *    client, so two workers can serve thousands of connections.
 *  - Each connection has its own context, in which the client's address is
 *    set once, when it is accepted.  A job enters that context with
 *    ctx_context_run(), so on whichever worker a step runs, the code that
 *    renders replies or logs finds its client with ctx_var_get(): what a
 *    thread-per-connection server would keep in a thread-local, without
 *    tying up a thread per connection.
 *
 * Policies:
 *  - Lines are capped at LINE_CAP (64 KiB).  A longer line is not an error:
 *    it is echoed in LINE_CAP pieces as it arrives, and only its terminator
 *    ends it (so the "\n" that ends a long line is no empty line).
 *  - Bytes are bytes: NULs and other binary data are echoed unchanged.
 *  - Back-pressure: while more than OUT_HIGH bytes of replies wait to be
 *    sent, the connection is not read.  A client that sends without reading
 *    costs bounded memory and simply stalls.
 *  - After the empty line the server finishes sending and closes; anything
 *    else that client sent is ignored.  A client that disconnects or fails
 *    mid-line is dropped quietly (a line on stderr), nobody else notices.
 *  - Out of file descriptors (EMFILE): one spare descriptor is kept open;
 *    when accept() runs out, it is freed to accept the waiting client and
 *    close it at once, so that client gets an EOF instead of hanging and the
 *    loop does not spin on a listening socket it cannot drain.
 *
 * Linux only (epoll, signalfd, accept4).
 */
#include <ctxvars.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINE_CAP (64 * 1024)     /* longest line held back whole */
#define OUT_HIGH (256 * 1024)    /* stop reading above this much unsent */
#define READ_BUDGET (64 * 1024)  /* bytes per step, so others get a turn */
#define READ_CHUNK (16 * 1024)
#define MAX_EVENTS 256

struct buf {
    char *data;
    size_t len, cap;
};

struct conn {
    int fd;
    char addr[INET_ADDRSTRLEN + 8]; /* "HOST:PORT": client_var's value */
    ctx_context_t *ctx;             /* this connection's own context */
    struct buf in;                  /* the current line, not yet echoed */
    struct buf out;                 /* replies not yet sent */
    bool mid_line;                  /* a piece of this line went out */
    bool closing;                   /* close once out is empty */
    bool dead;                      /* failed: close now */
    struct conn *prev, *next;       /* all connections, for shutdown */
};

static struct {
    int epfd, listen_fd, signal_fd, spare_fd;
    bool shedding;            /* main thread only: EMFILE was reported */
    ctx_pool_t *pool;
    ctx_var_t *client_var;    /* "HOST:PORT" of the current connection */
    pthread_mutex_t lock;     /* guards conns */
    struct conn *conns;
} srv = {.epfd = -1, .listen_fd = -1, .signal_fd = -1, .spare_fd = -1,
         .lock = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------------
 * Code that runs inside a connection's context: it never receives the
 * client's address, it asks the context for it.
 * ---------------------------------------------------------------- */

static const char *client(void)
{
    return ctx_var_get_or(srv.client_var, "unknown client");
}

static void log_client(const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "echo_server: client @ %s: %s\n", client(), msg);
}

static bool buf_reserve(struct buf *b, size_t extra)
{
    size_t cap = b->cap != 0 ? b->cap : 1024;

    while (cap - b->len < extra)
        cap *= 2;
    if (cap != b->cap) {
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return false;
        b->data = data;
        b->cap = cap;
    }
    return true;
}

/* Queues reply bytes; a connection that cannot get memory is dropped. */
static void reply(struct conn *c, const void *bytes, size_t n)
{
    if (!buf_reserve(&c->out, n)) {
        log_client("out of memory");
        c->dead = true;
        return;
    }
    memcpy(c->out.data + c->out.len, bytes, n);
    c->out.len += n;
}

static void say_goodbye(struct conn *c)
{
    char line[128];
    int n = snprintf(line, sizeof line, "Good bye, client @ %s\r\n", client());

    reply(c, line, (size_t)n);
    c->closing = true;
}

/* Echoes each complete line in c->in and keeps the unfinished rest. */
static void take_lines(struct conn *c)
{
    char *p = c->in.data;
    size_t left = c->in.len;
    char *nl;

    while (!c->closing && !c->dead &&
           (nl = memchr(p, '\n', left)) != NULL) {
        size_t n = (size_t)(nl - p) + 1;

        if (!c->mid_line && (n == 1 || (n == 2 && p[0] == '\r')))
            say_goodbye(c);
        else
            reply(c, p, n);
        c->mid_line = false;
        p += n;
        left -= n;
    }
    if (c->closing) {
        left = 0;
    } else if (left == LINE_CAP) {
        reply(c, p, left); /* the long-line policy: echo it in pieces */
        c->mid_line = true;
        left = 0;
    }
    memmove(c->in.data, p, left);
    c->in.len = left;
}

static void read_some(struct conn *c)
{
    size_t budget = READ_BUDGET;

    while (!c->closing && !c->dead && budget > 0 && c->out.len < OUT_HIGH) {
        size_t room = LINE_CAP - c->in.len; /* > 0: take_lines saw to it */
        size_t want = room < READ_CHUNK ? room : READ_CHUNK;

        if (!buf_reserve(&c->in, want)) {
            log_client("out of memory");
            c->dead = true;
            return;
        }
        ssize_t n = recv(c->fd, c->in.data + c->in.len, want, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            budget -= (size_t)n < budget ? (size_t)n : budget;
            take_lines(c);
        } else if (n == 0) {
            if (c->in.len > 0 || c->mid_line)
                log_client("left in the middle of a line");
            c->closing = true; /* the client is done; finish sending */
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else if (errno != EINTR) {
            log_client("read failed: %s", strerror(errno));
            c->dead = true;
        }
    }
}

/* Sends what the socket takes now; the rest waits for EPOLLOUT. */
static void send_some(struct conn *c)
{
    size_t sent = 0;

    while (sent < c->out.len && !c->dead) {
        ssize_t n = send(c->fd, c->out.data + sent, c->out.len - sent,
                         MSG_NOSIGNAL);
        if (n >= 0)
            sent += (size_t)n;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        else if (errno != EINTR) {
            log_client("write failed: %s", strerror(errno));
            c->dead = true;
        }
    }
    if (sent > 0) {
        memmove(c->out.data, c->out.data + sent, c->out.len - sent);
        c->out.len -= sent;
    }
}

/* One step of a connection's work, run in its context by conn_job(). */
static void *conn_step(void *arg)
{
    struct conn *c = arg;

    send_some(c);
    read_some(c);
    send_some(c);
    return NULL;
}

/* Runs in the connection's context once, at accept time. */
static void *set_client(void *arg)
{
    struct conn *c = arg;

    return (void *)(intptr_t)ctx_var_set(srv.client_var, c->addr, NULL);
}

/* ------------------------------------------------------------------
 * Connection bookkeeping, outside any connection's context.
 * ---------------------------------------------------------------- */

/* The events a connection waits for next; 0 means it is finished. */
static uint32_t conn_wants(const struct conn *c)
{
    uint32_t ev = 0;

    if (c->dead)
        return 0;
    if (c->out.len > 0)
        ev |= EPOLLOUT;
    if (!c->closing && c->out.len < OUT_HIGH)
        ev |= EPOLLIN;
    return ev;
}

/* Only called when no job for c can be in flight: its fd is disarmed. */
static void conn_close(struct conn *c)
{
    pthread_mutex_lock(&srv.lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv.conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv.lock);

    close(c->fd); /* also takes it out of the epoll set */
    /* client_var's value is c->addr, borrowed: the context goes first. */
    ctx_context_release(c->ctx);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

static bool conn_arm(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.ptr = c};

    return epoll_ctl(srv.epfd, op, c->fd, &ev) == 0;
}

/* A pool job: one step in the connection's context, then re-arm or close.
 * After the re-arm another worker may already own c, so c is not touched
 * again here. */
static void *conn_job(void *arg)
{
    struct conn *c = arg;
    int rc = ctx_context_run(c->ctx, conn_step, c, NULL);

    if (rc != 0) {
        fprintf(stderr, "echo_server: %s: ctx_context_run: %s\n", c->addr,
                strerror(rc));
        c->dead = true;
    }
    uint32_t events = conn_wants(c);
    if (events == 0 || !conn_arm(c, EPOLL_CTL_MOD, events))
        conn_close(c);
    return NULL;
}

static void conn_open(int fd, const struct sockaddr_in *peer)
{
    struct conn *c = calloc(1, sizeof *c);
    char host[INET_ADDRSTRLEN];
    void *set_rc = NULL;

    if (c == NULL) {
        close(fd);
        return;
    }
    c->fd = fd;
    inet_ntop(AF_INET, &peer->sin_addr, host, sizeof host);
    snprintf(c->addr, sizeof c->addr, "%s:%u", host, ntohs(peer->sin_port));
    if (ctx_context_new(&c->ctx) != 0 ||
        ctx_context_run(c->ctx, set_client, c, &set_rc) != 0 ||
        set_rc != NULL) {
        fprintf(stderr, "echo_server: %s: no context, dropped\n", c->addr);
        ctx_context_release(c->ctx);
        close(fd);
        free(c);
        return;
    }
    pthread_mutex_lock(&srv.lock);
    c->next = srv.conns;
    if (c->next != NULL)
        c->next->prev = c;
    srv.conns = c;
    pthread_mutex_unlock(&srv.lock);
    if (!conn_arm(c, EPOLL_CTL_ADD, EPOLLIN))
        conn_close(c);
}

/* EMFILE: free the spare descriptor to accept and drop one client.
 * Returns false when even that failed (the caller stops for now). */
static bool turn_one_away(void)
{
    if (!srv.shedding)
        fprintf(stderr, "echo_server: out of file descriptors, "
                        "turning clients away\n");
    srv.shedding = true;
    if (srv.spare_fd < 0)
        return false;
    close(srv.spare_fd);
    int fd = accept(srv.listen_fd, NULL, NULL);
    if (fd >= 0)
        close(fd);
    srv.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
}

static void accept_all(void)
{
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int fd = accept4(srv.listen_fd, (struct sockaddr *)&peer, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            srv.shedding = false;
            conn_open(fd, &peer);
        } else if (errno == EMFILE || errno == ENFILE) {
            if (!turn_one_away())
                return;
        } else if (errno != EINTR && errno != ECONNABORTED) {
            return; /* EAGAIN: drained.  Others: retried on the next event */
        }
    }
}

static void dispatch(struct conn *c)
{
    int rc = ctx_pool_submit(srv.pool, conn_job, c, NULL);

    if (rc != 0) {
        fprintf(stderr, "echo_server: %s: ctx_pool_submit: %s\n", c->addr,
                strerror(rc));
        conn_close(c);
    }
}

/* The main loop; returns when SIGINT or SIGTERM arrives. */
static int serve(void)
{
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        int n = epoll_wait(srv.epfd, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("echo_server: epoll_wait");
            return EXIT_FAILURE;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &srv.signal_fd)
                return EXIT_SUCCESS;
            if (p == &srv.listen_fd)
                accept_all();
            else
                dispatch(p);
        }
    }
}

/* ------------------------------------------------------------------
 * Setup and teardown.
 * ---------------------------------------------------------------- */

/* A thousand clients need more descriptors than the usual soft limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("echo_server: setrlimit(RLIMIT_NOFILE)");
    }
}

static int listen_on(unsigned port, unsigned *bound)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("echo_server: listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *bound = ntohs(sa.sin_port);
    return fd;
}

static bool watch(int fd, void *tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

    return epoll_ctl(srv.epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/* Signals are taken as events of the loop: blocked first, so the pool's
 * workers inherit the mask and never run a handler mid-step. */
static int setup(unsigned port)
{
    sigset_t stop;
    unsigned bound;
    int rc;

    signal(SIGPIPE, SIG_IGN); /* a vanished client is an EPIPE, not death */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    raise_fd_limit();

    srv.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv.signal_fd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
    srv.epfd = epoll_create1(EPOLL_CLOEXEC);
    srv.listen_fd = listen_on(port, &bound);
    if (srv.signal_fd < 0 || srv.epfd < 0 || srv.listen_fd < 0 ||
        !watch(srv.signal_fd, &srv.signal_fd) ||
        !watch(srv.listen_fd, &srv.listen_fd)) {
        perror("echo_server: setup");
        return -1;
    }
    if ((rc = ctx_var_create(&srv.client_var, "client", CTX_MISSING,
                             NULL)) != 0 ||
        (rc = ctx_pool_create(&srv.pool, 0)) != 0) {
        fprintf(stderr, "echo_server: setup: %s\n", strerror(rc));
        return -1;
    }
    printf("listening on 127.0.0.1:%u\n", bound);
    fflush(stdout); /* stdout may be a pipe: whoever waits needs it now */
    return 0;
}

/* Stop accepting, let the pool finish the steps in flight, then close
 * every connection left. */
static void teardown(void)
{
    if (srv.listen_fd >= 0)
        close(srv.listen_fd);
    if (srv.pool != NULL)
        ctx_pool_destroy(srv.pool);
    while (srv.conns != NULL)
        conn_close(srv.conns);
    ctx_var_release(srv.client_var);
    if (srv.epfd >= 0)
        close(srv.epfd);
    if (srv.signal_fd >= 0)
        close(srv.signal_fd);
    if (srv.spare_fd >= 0)
        close(srv.spare_fd);
}

static bool parse_port(int argc, char **argv, unsigned *port)
{
    char *end;

    if (argc != 3 || strcmp(argv[1], "--port") != 0)
        return false;
    errno = 0;
    unsigned long v = strtoul(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || v > 65535)
        return false;
    *port = (unsigned)v;
    return true;
}

int main(int argc, char **argv)
{
    unsigned port;
    int status = EXIT_FAILURE;

    if (!parse_port(argc, argv, &port)) {
        fprintf(stderr, "usage: %s --port N   (0 picks a free port)\n",
                argv[0]);
        return 2;
    }
    if (setup(port) == 0)
        status = serve();
    teardown();
    return status;
}
