/*
 * test_examples.c - runs the example programs and checks what they do.
 *
 * demo and request_id are run to completion and their output is checked
 * line by line; request_cpu's table is checked against the CPU time each
 * request is known to burn.  The echo servers (echo_server on epoll and a
 * pool, and uv_echo_server on libuv, when it is built) speak one protocol,
 * so every server test runs against each of them (a loop test over
 * servers[]): each is started with --port 0 and driven by real TCP
 * clients.  Every wait on a child or a socket is bounded by poll() with
 * IO_TIMEOUT_MS, so a broken server fails the test instead of hanging it;
 * the timeout only ever turns a hang into a failure, it never decides a
 * pass.  Children get PR_SET_PDEATHSIG, so a failed test leaves no server
 * behind.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EXAMPLES_DIR
#error "EXAMPLES_DIR must name the built examples directory"
#endif

#define IO_TIMEOUT_MS 10000
#define NCLIENTS 1000
#define MIB (1024 * 1024)

/* ------------------------------------------------------------------
 * Child processes
 * ---------------------------------------------------------------- */

/* Starts EXAMPLES_DIR/prog with stdout on a pipe (*out is its read end).
 * nofile != 0 sets both RLIMIT_NOFILE limits of the child. */
static pid_t spawn(const char *prog, const char *arg1, const char *arg2,
                   rlim_t nofile, int *out)
{
    char path[4096];
    int pipefd[2];
    pid_t parent = getpid();

    snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, prog);
    ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char *argv[] = {path, (char *)arg1, (char *)arg2, NULL};
        struct rlimit rl = {nofile, nofile};

        dup2(pipefd[1], STDOUT_FILENO);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (nofile != 0 && setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(126);
        execv(path, argv);
        _exit(127);
    }
    close(pipefd[1]);
    *out = pipefd[0];
    return pid;
}

static void wait_fd(int fd, short events, const char *what)
{
    struct pollfd p = {.fd = fd, .events = events};

    ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1, "timed out: %s", what);
}

/* Reads fd to EOF into buf (NUL-terminated); returns the length. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;

    for (;;) {
        wait_fd(fd, POLLIN, "child output");
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        len += (size_t)n;
        ck_assert_msg(len < cap - 1, "child output too long");
    }
    buf[len] = '\0';
    return len;
}

static void expect_clean_exit(pid_t pid)
{
    int status;

    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "killed by signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}

/* Runs prog to completion, its stdout into buf; it must exit 0. */
static void run_example(const char *prog, char *buf, size_t cap)
{
    int out;
    pid_t pid = spawn(prog, NULL, NULL, 0, &out);

    read_all(out, buf, cap);
    close(out);
    expect_clean_exit(pid);
}

/* ------------------------------------------------------------------
 * demo and request_id
 * ---------------------------------------------------------------- */

START_TEST(test_demo_output)
{
    static const char want[] =
        "default: red\n"
        "main sets: green\n"
        "  inside the copy: blue\n"
        "after the run, main: green, the copy: blue\n"
        "a new thread sees: green\n"
        "a pool job sees: green\n"
        "main now: yellow\n"
        "after reset: red\n";
    char got[4096];

    run_example("demo", got, sizeof got);
    ck_assert_str_eq(got, want);
}
END_TEST

static const char *const users[] = {"alice", "bob",  "carol",
                                    "dave",  "erin", "frank"};
enum { NUSERS = sizeof users / sizeof users[0], STAGES = 4 };

/* The line request req_no's handler logs at stage s, in order. */
static void request_line(char *buf, size_t cap, int req_no, int s)
{
    static const char *const fmt[STAGES] = {
        "[req-%d] handling a request from %s", "[req-%d] loading the profile of %s",
        "[req-%d] audit: page served to %s", "[req-%d] done with %s"};

    snprintf(buf, cap, fmt[s], req_no, users[req_no - 1]);
}

/* Which user a line is about; the user travels as a parameter, the id
 * through the context, so they agree only if the context followed. */
static int user_of(const char *line)
{
    int found = -1;

    for (int u = 0; u < NUSERS; u++) {
        const char *at = strstr(line, users[u]);
        if (at != NULL && at[strlen(users[u])] == '\0') {
            ck_assert_msg(found < 0, "two users in: %s", line);
            found = u;
        }
    }
    ck_assert_msg(found >= 0, "no user in: %s", line);
    return found;
}

START_TEST(test_request_id_lines)
{
    char out[8192], want[128];
    int stage[NUSERS] = {0};
    int lines = 0;

    run_example("request_id", out, sizeof out);
    for (char *save, *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save), lines++) {
        if (strncmp(line, "[main]", 6) == 0) {
            ck_assert_str_eq(line, "[main] all 6 requests served");
            ck_assert_int_eq(lines, NUSERS * STAGES); /* and it is last */
            continue;
        }
        int u = user_of(line);
        ck_assert_msg(stage[u] < STAGES, "extra line: %s", line);
        request_line(want, sizeof want, u + 1, stage[u]++);
        ck_assert_str_eq(line, want);
    }
    ck_assert_int_eq(lines, NUSERS * STAGES + 1);
    for (int u = 0; u < NUSERS; u++)
        ck_assert_int_eq(stage[u], STAGES);
}
END_TEST

/* ------------------------------------------------------------------
 * The echo servers: process and clients
 * ---------------------------------------------------------------- */

/* What differs between the servers: the binary, and what comes before
 * the good-bye line (uv_echo_server answers as the asyncio example does,
 * with an HTTP status line and an empty header block). */
static const struct server_kind {
    const char *prog;
    const char *goodbye_head;
} servers[] = {
    {"echo_server", ""},
#ifdef HAVE_UV_ECHO_SERVER
    {"uv_echo_server", "HTTP/1.1 200 OK\r\n\r\n"},
#endif
};
#define NSERVERS ((int)(sizeof servers / sizeof servers[0]))

struct server {
    const struct server_kind *kind;
    pid_t pid;
    int out;
    unsigned port;
};

/* Starts servers[which]; nofile as for spawn(). */
static struct server start_server(int which, rlim_t nofile)
{
    struct server s = {.kind = &servers[which]};
    char line[256];
    size_t len = 0;

    s.pid = spawn(s.kind->prog, "--port", "0", nofile, &s.out);
    for (;;) { /* the first line only: the server keeps stdout open */
        wait_fd(s.out, POLLIN, "the listening line");
        ck_assert_int_eq(read(s.out, line + len, 1), 1);
        if (line[len] == '\n')
            break;
        ck_assert_uint_lt(++len, sizeof line - 1);
    }
    line[len] = '\0';
    ck_assert_msg(sscanf(line, "listening on 127.0.0.1:%u", &s.port) == 1 &&
                      s.port > 0 && s.port < 65536,
                  "bad first line: %s", line);
    return s;
}

/* SIGTERM must end the server cleanly, with clients still connected. */
static void stop_server(struct server *s)
{
    char rest[256];

    ck_assert_int_eq(kill(s->pid, SIGTERM), 0);
    ck_assert_uint_eq(read_all(s->out, rest, sizeof rest), 0);
    close(s->out);
    expect_clean_exit(s->pid);
}

static void raise_fd_limit(rlim_t need)
{
    struct rlimit rl;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_msg(rl.rlim_max >= need, "RLIMIT_NOFILE hard limit %lu < %lu",
                  (unsigned long)rl.rlim_max, (unsigned long)need);
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static int client_connect(unsigned port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int err = 0;
    socklen_t len = sizeof err;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        ck_assert_int_eq(errno, EINPROGRESS);
        wait_fd(fd, POLLOUT, "connect");
        ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
        ck_assert_int_eq(err, 0);
    }
    return fd;
}

static unsigned local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

/* Sends snd and receives exactly rlen bytes into rcv, both at once, so a
 * server that echoes while we still send never deadlocks with us. */
static void pump(int fd, const char *snd, size_t slen, char *rcv, size_t rlen)
{
    size_t sent = 0, got = 0;

    while (sent < slen || got < rlen) {
        struct pollfd p = {.fd = fd};

        p.events = (short)((sent < slen ? POLLOUT : 0) |
                           (got < rlen ? POLLIN : 0));
        ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1,
                      "timed out: sent %zu/%zu, received %zu/%zu", sent,
                      slen, got, rlen);
        if (sent < slen && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = send(fd, snd + sent, slen - sent, MSG_NOSIGNAL);
            ck_assert_msg(n > 0 || errno == EAGAIN, "send: %s",
                          strerror(errno));
            sent += n > 0 ? (size_t)n : 0;
        }
        if (got < rlen && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
            ssize_t n = recv(fd, rcv + got, rlen - got, 0);
            ck_assert_msg(n > 0 || (n < 0 && errno == EAGAIN),
                          "connection ended after %zu/%zu bytes", got, rlen);
            got += n > 0 ? (size_t)n : 0;
        }
    }
}

static void send_str(int fd, const char *s)
{
    pump(fd, s, strlen(s), NULL, 0);
}

static void expect_bytes(int fd, const char *want, size_t len)
{
    char *got = malloc(len + 1);

    ck_assert_ptr_nonnull(got);
    pump(fd, NULL, 0, got, len);
    ck_assert_msg(memcmp(got, want, len) == 0, "wrong echo of %zu bytes",
                  len);
    free(got);
}

static void echo_line(int fd, const char *line)
{
    send_str(fd, line);
    expect_bytes(fd, line, strlen(line));
}

/* The server closed in order: EOF, and nothing before it. */
static void expect_eof(int fd)
{
    char c;

    wait_fd(fd, POLLIN, "EOF");
    ck_assert_int_eq(recv(fd, &c, 1, 0), 0);
}

static void expect_goodbye(const struct server *s, int fd)
{
    char want[128];

    snprintf(want, sizeof want, "%sGood bye, client @ 127.0.0.1:%u\r\n",
             s->kind->goodbye_head, local_port(fd));
    expect_bytes(fd, want, strlen(want));
    expect_eof(fd);
}

/* Closes with RST instead of FIN: the rudest way to leave. */
static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
}

/* ------------------------------------------------------------------
 * echo_server tests
 * ---------------------------------------------------------------- */

START_TEST(test_echo_single_client)
{
    struct server s = start_server(_i, 0);
    int idle = client_connect(s.port);
    int fd = client_connect(s.port);

    echo_line(fd, "hello\n");
    echo_line(fd, "with CRLF\r\n");
    echo_line(fd, " \n");
    echo_line(fd, "two\nlines in one write\n");
    send_str(fd, "split ");
    send_str(fd, "across writes\n");
    expect_bytes(fd, "split across writes\n", 20);
    send_str(fd, "\r\n");
    expect_goodbye(&s, fd);
    close(fd);

    /* a fresh connection gets its own address in its good-bye */
    fd = client_connect(s.port);
    send_str(fd, "\n");
    expect_goodbye(&s, fd);
    close(fd);

    stop_server(&s);
    expect_eof(idle); /* shutdown closed the idle connection */
    close(idle);
}
END_TEST

START_TEST(test_echo_thousand_clients)
{
    enum { LINES = 3 };
    static int fds[NCLIENTS];
    char line[64];

    raise_fd_limit(NCLIENTS + 64);
    struct server s = start_server(_i, 0);
    for (int k = 0; k < NCLIENTS; k++)
        fds[k] = client_connect(s.port);

    /* Round-robin: every client is mid-conversation at once, so a server
     * that served connections one after another would time out here. */
    for (int i = 0; i < LINES; i++) {
        for (int k = 0; k < NCLIENTS; k++) {
            snprintf(line, sizeof line, "client %d line %d%s", k, i,
                     i == 1 ? "\r\n" : "\n");
            send_str(fds[k], line);
        }
        for (int k = 0; k < NCLIENTS; k++) {
            snprintf(line, sizeof line, "client %d line %d%s", k, i,
                     i == 1 ? "\r\n" : "\n");
            expect_bytes(fds[k], line, strlen(line));
        }
    }
    for (int k = 0; k < NCLIENTS; k++)
        send_str(fds[k], k % 2 ? "\n" : "\r\n");
    for (int k = 0; k < NCLIENTS; k++) {
        expect_goodbye(&s, fds[k]);
        close(fds[k]);
    }
    stop_server(&s);
}
END_TEST

/* 1 MiB without a newline.  The server's policy is to echo an over-long
 * line in pieces as it arrives, so all of it comes back before the line is
 * even finished; the "\n" that ends it is then echoed, not taken for an
 * empty line. */
static void long_line_client(const struct server *s)
{
    int fd = client_connect(s->port);
    char *line = malloc(MIB), *back = malloc(MIB);

    ck_assert(line != NULL && back != NULL);
    for (size_t i = 0; i < MIB; i++)
        line[i] = (char)('a' + i % 26);
    pump(fd, line, MIB, back, MIB);
    ck_assert(memcmp(line, back, MIB) == 0);
    echo_line(fd, "\n");
    send_str(fd, "\n");
    expect_goodbye(s, fd);
    close(fd);
    free(line);
    free(back);
}

static void binary_client(const struct server *s)
{
    int fd = client_connect(s->port);
    char bytes[256];
    size_t n = 0;

    for (int b = 255; b >= 0; b--) /* NUL and CR inside, one LF at the end */
        if (b != '\n')
            bytes[n++] = (char)b;
    bytes[n++] = '\n';
    pump(fd, bytes, n, NULL, 0);
    expect_bytes(fd, bytes, n);
    pump(fd, "\0\n", 2, NULL, 0); /* a NUL is not an empty line */
    expect_bytes(fd, "\0\n", 2);
    echo_line(fd, "\r\r\n");
    send_str(fd, "\n");
    expect_goodbye(s, fd);
    close(fd);
}

/* Sends until the socket is full and never reads: the server must stall
 * this client alone. */
static int hog_client(unsigned port)
{
    int fd = client_connect(port);
    static char chunk[64 * 1024];
    size_t total = 0;

    memset(chunk, 'h', sizeof chunk);
    while (total < 64 * MIB) {
        ssize_t n = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        total += (size_t)n;
    }
    ck_assert_msg(total < 64 * MIB, "the server never pushed back");
    return fd;
}

START_TEST(test_echo_bad_input)
{
    struct server s = start_server(_i, 0);
    int good = client_connect(s.port);

    echo_line(good, "before\n");
    long_line_client(&s);
    echo_line(good, "after the long line\n");
    binary_client(&s);
    echo_line(good, "after the binary data\n");

    int hog = hog_client(s.port);
    echo_line(good, "while a client hogs its buffers\n");

    int fd = client_connect(s.port); /* EOF mid-line */
    send_str(fd, "half a li");
    close(fd);
    fd = client_connect(s.port); /* RST mid-line */
    send_str(fd, "half a line, then reset");
    reset_close(fd);
    fd = client_connect(s.port); /* gone without a word */
    close(fd);
    reset_close(hog);
    echo_line(good, "after the rude ones\n");

    fd = client_connect(s.port); /* and it still takes new clients */
    echo_line(fd, "late\n");
    send_str(fd, "\n");
    expect_goodbye(&s, fd);
    close(fd);

    send_str(good, "\n");
    expect_goodbye(&s, good);
    close(good);
    stop_server(&s);
}
END_TEST

/* Tries "ping\n" on a client the server may have turned away: true if it
 * was echoed, false if the server closed the connection. */
static bool served(int fd)
{
    char buf[5];
    size_t got = 0;

    send(fd, "ping\n", 5, MSG_NOSIGNAL); /* may fail: already reset */
    while (got < sizeof buf) {
        wait_fd(fd, POLLIN, "echo or close");
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
        if (n <= 0) {
            ck_assert_msg(n == 0 || errno == ECONNRESET, "recv: %s",
                          strerror(errno));
            ck_assert_uint_eq(got, 0);
            return false;
        }
        got += (size_t)n;
    }
    ck_assert(memcmp(buf, "ping\n", 5) == 0);
    return true;
}

START_TEST(test_echo_out_of_fds)
{
    enum { N = 60 };
    int fds[N], nserved = 0;
    bool ok[N];

    /* Room for the server's own descriptors and a few clients only. */
    struct server s = start_server(_i, 32);
    for (int k = 0; k < N; k++)
        fds[k] = client_connect(s.port);
    for (int k = 0; k < N; k++) {
        ok[k] = served(fds[k]);
        nserved += ok[k];
    }
    ck_assert_int_gt(nserved, 0);
    ck_assert_int_lt(nserved, N);

    /* The good-bye's EOF proves the server has closed its end, so once
     * every served client is through, there is room again. */
    for (int k = 0; k < N; k++) {
        if (ok[k]) {
            send_str(fds[k], "\n");
            expect_goodbye(&s, fds[k]);
        }
        close(fds[k]);
    }
    int fd = client_connect(s.port);
    echo_line(fd, "room again\n");
    send_str(fd, "\n");
    expect_goodbye(&s, fd);
    close(fd);
    stop_server(&s);
}
END_TEST

/* ------------------------------------------------------------------
 * request_cpu: the watcher charges CPU time to the request being left
 * ---------------------------------------------------------------- */

START_TEST(test_request_cpu_table)
{
    /* Each request's work burns at least this much of its thread's CPU
     * clock, the clock the watcher charges from; fibers run 3 pieces. */
    static const struct {
        const char *name;
        double min_ms;
    } want[] = {{"busy", 40},   {"idle", 1},     {"pool-1", 3},
                {"pool-2", 6},  {"pool-3", 9},   {"pool-4", 12},
                {"fiber-a", 12}, {"fiber-b", 3}, {"main-run", 5}};
    enum { NWANT = sizeof want / sizeof want[0] };
    double ms[NWANT];
    int seen[NWANT] = {0};
    char out[4096];

    run_example("request_cpu", out, sizeof out);
    char *save, *line = strtok_r(out, "\n", &save);
    ck_assert_ptr_nonnull(line);
    ck_assert_msg(strncmp(line, "request", 7) == 0, "header: %s", line);
    int rows = 0;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        if (line[0] == '(')
            continue; /* the time outside any request */
        char name[32];
        double v;
        ck_assert_msg(sscanf(line, "%31s %lf", name, &v) == 2, "row: %s",
                      line);
        int k = 0;
        while (k < NWANT && strcmp(want[k].name, name) != 0)
            k++;
        ck_assert_msg(k < NWANT, "unknown request: %s", line);
        ck_assert_msg(seen[k]++ == 0, "twice: %s", line);
        ms[k] = v;
        rows++;
    }
    ck_assert_int_eq(rows, NWANT); /* every request appears, once */
    for (int k = 0; k < NWANT; k++) {
        ck_assert_msg(ms[k] > 0, "%s used no CPU", want[k].name);
        /* (The table prints 3 decimals; allow for that rounding.) */
        ck_assert_msg(ms[k] >= want[k].min_ms - 0.001,
                      "%s: %.3f ms charged, it used at least %.0f",
                      want[k].name, ms[k], want[k].min_ms);
    }
    ck_assert_msg(ms[0] > ms[1], "busy %.3f ms <= idle %.3f ms", ms[0],
                  ms[1]);
}
END_TEST

static Suite *examples_suite(void)
{
    Suite *s = suite_create("examples");
    TCase *tc = tcase_create("examples");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_demo_output);
    tcase_add_test(tc, test_request_id_lines);
    tcase_add_test(tc, test_request_cpu_table);
    /* _i in each: the index of the server in servers[] */
    tcase_add_loop_test(tc, test_echo_single_client, 0, NSERVERS);
    tcase_add_loop_test(tc, test_echo_thousand_clients, 0, NSERVERS);
    tcase_add_loop_test(tc, test_echo_bad_input, 0, NSERVERS);
    tcase_add_loop_test(tc, test_echo_out_of_fds, 0, NSERVERS);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(examples_suite)
