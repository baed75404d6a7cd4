/* The daemon side of the control socket: one request per connection, answered and closed. Peers
 * are local programs of the same user, but their bytes are still bounded: request line and
 * payload sizes, an idle timeout, a cap on connections at once. */
#define _GNU_SOURCE /* struct ucred, SO_PEERCRED */
#include "proxy/admin/control.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/crypto.h>

#include "common/durable_file.h"
#include "common/log.h"
#include "oauth/token_cache.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_proto.h"
#include "proxy/runtime/device_blocks.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/delivery/queue.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"
#include "store/spool_envelope.h"

#define CONTROL_MAX_CONNS 16
#define CONTROL_IDLE_SECONDS 5
/* A token request waits for the IdP (its own timeouts apply); this only bounds the wait. */
#define CONTROL_TOKEN_WAIT_SECONDS 60

struct control_conn;

struct control {
    struct server *srv;
    struct evconnlistener *lev;
    char *path;
    dev_t dev; /* of the socket file we made: only that one is removed */
    ino_t ino;
    struct control_conn *conns;
    unsigned nconns;
};

struct control_cmd;

struct control_conn {
    struct control *ctl;
    /* the config generation current when the connection came: its token caches stay valid
     * through a reload while a request waits on one */
    struct server_gen *gen;
    struct control_conn *next, *prev;
    struct bufferevent *bev;
    struct token_wait *wait;
    struct event *timer;           /* bounds a token wait */
    const struct control_cmd *cmd; /* set once the request line is read */
    char *arg;
    size_t account; /* index into cfg->accounts, for token waits */
    unsigned long uid;
    int replied;
};

/* arg: the request's argument (NULL if none); payload: its payload line (commands with one). */
struct control_cmd {
    const char *name;
    int arg;     /* 1: an argument is required; 0: none is allowed; 2: optional */
    int payload; /* a payload line follows the request line: 1 a secret, 2 a text */
    void (*run)(struct control_conn *c, const char *arg, char *payload);
};

static void conn_free(struct control_conn *c)
{
    struct control *ctl = c->ctl;
    token_cache_cancel(c->wait);
    if (c->timer)
        event_free(c->timer);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c->arg);
    server_gen_unref(c->gen); /* after the wait on its token cache is cancelled */
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctl->nconns--;
    free(c);
}

/* Queue the reply; the connection closes once it is written. */
static void reply(struct control_conn *c, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply(struct control_conn *c, int ok, const char *fmt, ...)
{
    va_list ap;
    if (c->replied)
        return;
    c->replied = 1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "%s", ok ? "ok\n" : "error ");
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    if (!ok)
        evbuffer_add(out, "\n", 1);
    bufferevent_disable(c->bev, EV_READ);
    struct timeval tv = {.tv_sec = CONTROL_IDLE_SECONDS};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_WRITE);
}

/* The index of the account named arg, or replies the valid names and returns -1. */
static int find_account(struct control_conn *c, const char *arg, size_t *idx)
{
    const struct config *cfg = c->gen->cfg;
    for (size_t i = 0; i < cfg->naccounts; i++)
        if (strcmp(cfg->accounts[i].name, arg) == 0) {
            *idx = i;
            return 0;
        }
    char names[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < cfg->naccounts && used < sizeof(names); i++) {
        int n = snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                         cfg->accounts[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    /* the peer's argument is not echoed: it could be anything */
    reply(c, 0, "unknown account (valid: %s)", names);
    return -1;
}

static void log_request(const struct control_conn *c, const char *cmd, const char *arg)
{
    char safe[160];
    /* a configured name as it is; anything else the peer sent, quoted and escaped */
    if (arg && strncmp(cmd, "device-", 7) == 0)
        log_info("event=control_request cmd=%s device=%s peer_uid=%lu", cmd,
                 log_safe(safe, sizeof(safe), arg, strlen(arg)), c->uid);
    else if (arg && config_account(c->gen->cfg, arg))
        log_info("event=control_request cmd=%s account=%s peer_uid=%lu", cmd, arg, c->uid);
    else if (arg)
        log_info("event=control_request cmd=%s account=%s peer_uid=%lu", cmd,
                 log_safe(safe, sizeof(safe), arg, strlen(arg)), c->uid);
    else
        log_info("event=control_request cmd=%s peer_uid=%lu", cmd, c->uid);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct control_conn *c = arg;
    (void)fd;
    (void)what;
    token_cache_cancel(c->wait);
    c->wait = NULL;
    reply(c, 0, "timed out after %d s waiting for the identity provider",
          CONTROL_TOKEN_WAIT_SECONDS);
}

/* Start waiting for account's token; cb replies. */
static void wait_token(struct control_conn *c, token_cb cb)
{
    struct timeval tv = {.tv_sec = CONTROL_TOKEN_WAIT_SECONDS};
    c->timer = evtimer_new(c->ctl->srv->base, on_wait_timeout, c);
    if (!c->timer || evtimer_add(c->timer, &tv) != 0) {
        reply(c, 0, "out of memory");
        return;
    }
    /* cb may run (and reply) before this returns; then NULL comes back */
    c->wait = token_cache_get(server_gen_token_cache(c->gen, c->account), cb, c);
}

static void on_token(void *arg, const char *token, const char *err)
{
    struct control_conn *c = arg;
    c->wait = NULL;
    if (c->timer)
        evtimer_del(c->timer);
    if (token)
        reply(c, 1, "%s\n", token);
    else
        reply(c, 0, "no token for account %s: %s", c->gen->cfg->accounts[c->account].name,
              err ? err : "unknown error");
}

static void cmd_token(struct control_conn *c, const char *arg, char *payload)
{
    (void)payload;
    if (find_account(c, arg, &c->account) == 0)
        wait_token(c, on_token);
}

/* After an import: the first token from the new refresh token says whether the IdP takes it. */
static void on_imported_token(void *arg, const char *token, const char *err)
{
    struct control_conn *c = arg;
    struct token_cache_stats st;
    c->wait = NULL;
    if (c->timer)
        evtimer_del(c->timer);
    if (!token) {
        reply(c, 0, "refresh token stored, but the identity provider did not take it: %s",
              err ? err : "unknown error");
        return;
    }
    token_cache_stats(server_gen_token_cache(c->gen, c->account), &st);
    reply(c, 1, "expires_at=%lld\n", (long long)st.expires_at_wall);
}

static void cmd_refresh_token(struct control_conn *c, const char *arg, char *payload)
{
    if (find_account(c, arg, &c->account) != 0)
        return;
    const struct cfg_account *a = &c->gen->cfg->accounts[c->account];
    if (strcmp(a->grant, "refresh_token") != 0) {
        reply(c, 0,
              "account %s uses grant = %s: only grant = refresh_token accounts take a "
              "refresh token",
              a->name, a->grant);
        return;
    }
    if (token_cache_import_refresh_token(server_gen_token_cache(c->gen, c->account), payload) !=
        0) {
        reply(c, 0, "account %s: the refresh token could not be stored (see the daemon's log)",
              a->name);
        return;
    }
    log_info("event=refresh_token_imported account=%s peer_uid=%lu", a->name, c->uid);
    wait_token(c, on_imported_token);
}

static cJSON *account_json(const struct cfg_account *a, const struct token_cache *tc)
{
    struct token_cache_stats st;
    token_cache_stats(tc, &st);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "name", a->name);
    cJSON_AddStringToObject(o, "provider", a->provider);
    cJSON_AddStringToObject(o, "grant", a->grant);
    cJSON_AddStringToObject(o, "mailbox", a->mailbox ? a->mailbox : "");
    if (st.expires_at_wall)
        cJSON_AddNumberToObject(o, "token_expires", (double)st.expires_at_wall);
    else
        cJSON_AddNullToObject(o, "token_expires");
    cJSON_AddBoolToObject(o, "refreshing", st.refreshing);
    if (st.last_result < 0)
        cJSON_AddNullToObject(o, "last_result");
    else
        cJSON_AddStringToObject(o, "last_result", st.last_result ? "ok" : "failed");
    if (st.last_attempt_wall)
        cJSON_AddNumberToObject(o, "last_attempt", (double)st.last_attempt_wall);
    else
        cJSON_AddNullToObject(o, "last_attempt");
    if (st.last_error[0])
        cJSON_AddStringToObject(o, "last_error", st.last_error);
    else
        cJSON_AddNullToObject(o, "last_error");
    cJSON_AddBoolToObject(o, "reauthorize", st.reauthorize);
    cJSON_AddNumberToObject(o, "requests", (double)st.requests);
    cJSON_AddNumberToObject(o, "failures", (double)st.failures);
    return o;
}

/* A JSON document as the reply (doc NULL: out of memory), on one line: the reply is bounded
 * (CONTROL_REPLY_MAX) and the commands print it formatted themselves. Frees doc. */
static void reply_json(struct control_conn *c, cJSON *doc)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (text)
        reply(c, 1, "%s\n", text);
    else
        reply(c, 0, "out of memory");
    cJSON_free(text);
}

static void cmd_accounts(struct control_conn *c, const char *arg, char *payload)
{
    (void)arg;
    (void)payload;
    const struct server_gen *g = c->gen;
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_AddArrayToObject(doc, "accounts") : NULL;
    if (!list || !cJSON_AddStringToObject(doc, "source", "daemon")) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    for (size_t i = 0; doc && i < g->cfg->naccounts; i++) {
        cJSON *o = account_json(&g->cfg->accounts[i], server_gen_token_cache(g, i));
        if (o)
            account_budget_json(o, c->ctl->srv->dctx.budget, g->cfg->accounts[i].name,
                                g->cfg->accounts[i].daily_recipient_limit, (int64_t)time(NULL));
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            cJSON_Delete(doc);
            doc = NULL;
        }
    }
    reply_json(c, doc);
}

/* `devices`: the live device history (proxy/runtime/device_stats_json.c draws the document). */
static void cmd_devices(struct control_conn *c, const char *arg, char *payload)
{
    (void)arg;
    (void)payload;
    struct server *srv = c->ctl->srv;
    /* ~250 bytes a device */
    cJSON *doc = device_stats_json(device_stats_keeper_stats(srv->devstats), srv->gen->cfg,
                                   "daemon", (int64_t)time(NULL));
    if (doc && device_blocks_json(srv->dctx.blocks, doc) != 0) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    reply_json(c, doc);
}

/* The configured device named arg, or replies the valid names and returns NULL. */
static const struct cfg_device *find_device(struct control_conn *c, const char *arg)
{
    const struct config *cfg = c->gen->cfg;
    for (size_t i = 0; i < cfg->ndevices; i++)
        if (strcmp(cfg->devices[i].name, arg) == 0)
            return &cfg->devices[i];
    char names[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < cfg->ndevices && used < sizeof(names); i++) {
        int n = snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                         cfg->devices[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    /* the peer's argument is not echoed: it could be anything */
    reply(c, 0, "unknown device (valid: %s)", cfg->ndevices ? names : "none");
    return NULL;
}

/* `devices block NAME [--reason TEXT]`: payload is the reason (a text line, may be empty). */
static void cmd_device_block(struct control_conn *c, const char *arg, char *payload)
{
    char err[1024], reason[DEVICE_BLOCK_REASON_MAX + 1];
    struct device_blocks *b = c->ctl->srv->dctx.blocks;
    const struct cfg_device *d = find_device(c, arg);
    if (!d)
        return;
    if (device_blocks_set(b, d->name, "admin", payload, (int64_t)time(NULL), err, sizeof(err)) !=
        0) {
        reply(c, 0, "cannot block %s: %s", d->name, err);
        return;
    }
    const struct device_block *bl = device_blocks_get(b, d->name);
    device_block_sanitize(reason, sizeof(reason), bl ? bl->reason : "");
    log_warn("event=device_blocked device=%s by=admin peer_uid=%lu reason=\"%s\"", d->name, c->uid,
             reason);
    reply(c, 1, "device %s blocked: it hears 550 5.7.1 %s\n", d->name, reason);
}

/* `devices unblock NAME`: a configured device, or a blocked name the config no longer has. */
static void cmd_device_unblock(struct control_conn *c, const char *arg, char *payload)
{
    char err[1024];
    (void)payload;
    struct device_blocks *b = c->ctl->srv->dctx.blocks;
    if (!device_blocks_get(b, arg) && !find_device(c, arg))
        return;
    int r = device_blocks_clear(b, arg, err, sizeof(err));
    if (r < 0) {
        reply(c, 0, "cannot unblock %s: %s", arg, err);
        return;
    }
    if (r == 0) {
        reply(c, 0, "device %s is not blocked", arg);
        return;
    }
    log_warn("event=device_unblocked device=%s by=admin peer_uid=%lu", arg, c->uid);
    reply(c, 1, "device %s unblocked\n", arg);
}

/* Messages listed by `queue`: the reply stays well under CONTROL_REPLY_MAX (a message is at most
 * ~2 KB of JSON: 20 recipients listed, a 512-byte last error). "messages" has the whole count. */
#define CONTROL_QUEUE_LIST_MAX 400

/* `queue`: the queue, oldest first (proxy/delivery/queue_ctl.c draws each message). */
static void cmd_queue(struct control_conn *c, const char *arg, char *payload)
{
    (void)arg;
    (void)payload;
    struct queue *q = c->ctl->srv->dctx.queue;
    struct queue_stats st;
    queue_stats(q, &st);
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = q ? queue_list_json(q) : cJSON_CreateArray();
    if (!doc || !list || !cJSON_AddStringToObject(doc, "source", "daemon") ||
        !cJSON_AddNumberToObject(doc, "messages", (double)st.messages) ||
        !cJSON_AddNumberToObject(doc, "held", (double)st.held) ||
        !cJSON_AddNumberToObject(doc, "sending", (double)st.sending) ||
        !cJSON_AddNumberToObject(doc, "now", (double)time(NULL))) {
        cJSON_Delete(list);
        cJSON_Delete(doc);
        reply_json(c, NULL);
        return;
    }
    while (cJSON_GetArraySize(list) > CONTROL_QUEUE_LIST_MAX)
        cJSON_DeleteItemFromArray(list, CONTROL_QUEUE_LIST_MAX);
    cJSON_AddItemToObject(doc, "queue", list);
    reply_json(c, doc);
}

/* queue-flush [ID], queue-hold ID, queue-release ID, queue-delete ID */
static void queue_verb(struct control_conn *c, const char *id,
                       int (*verb)(struct queue *, const char *, char *, size_t), const char *done)
{
    char err[512];
    struct queue *q = c->ctl->srv->dctx.queue;
    /* the peer's argument is echoed only once it is known to be a queue id */
    if (id && !spool_id_valid(id)) {
        reply(c, 0, "not a queue id (16 lower-case hex digits)");
        return;
    }
    if (!q) {
        reply(c, 0, "the queue is not open");
        return;
    }
    if (verb(q, id, err, sizeof(err)) != 0) {
        reply(c, 0, "%s", err);
        return;
    }
    reply(c, 1, "%s %s\n", id ? id : "every message not held:", done);
}

static void cmd_queue_flush(struct control_conn *c, const char *arg, char *payload)
{
    (void)payload;
    queue_verb(c, arg, queue_flush, "due now");
}

static void cmd_queue_hold(struct control_conn *c, const char *arg, char *payload)
{
    (void)payload;
    queue_verb(c, arg, queue_hold, "held");
}

static void cmd_queue_release(struct control_conn *c, const char *arg, char *payload)
{
    (void)payload;
    queue_verb(c, arg, queue_release, "released");
}

static void cmd_queue_delete(struct control_conn *c, const char *arg, char *payload)
{
    (void)payload;
    queue_verb(c, arg, queue_delete, "deleted");
}

static const struct control_cmd commands[] = {
    {"token", 1, 0, cmd_token},
    {"accounts", 0, 0, cmd_accounts},
    {"refresh-token", 1, 1, cmd_refresh_token},
    {"devices", 0, 0, cmd_devices},
    {"queue", 0, 0, cmd_queue},
    {"queue-flush", 2, 0, cmd_queue_flush},
    {"queue-hold", 1, 0, cmd_queue_hold},
    {"queue-release", 1, 0, cmd_queue_release},
    {"queue-delete", 1, 0, cmd_queue_delete},
    {"device-block", 1, 2, cmd_device_block},
    {"device-unblock", 1, 0, cmd_device_unblock},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void run_request(struct control_conn *c, char *payload)
{
    /* The request is complete: a token wait may outlast the idle timeout (its own timer bounds
     * it), and nothing more is read. */
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    log_request(c, c->cmd->name, c->arg);
    c->cmd->run(c, c->arg, payload);
}

static void on_request_line(struct control_conn *c, char *line, size_t len)
{
    const char *cmd, *arg;
    if (control_split(line, len, &cmd, &arg) != 0) {
        reply(c, 0, "malformed request");
        return;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, cmd) != 0)
            continue;
        if (commands[i].arg != 2 && commands[i].arg != (arg != NULL)) {
            reply(c, 0, "%s %s", cmd, arg ? "takes no argument" : "needs an argument");
            return;
        }
        c->cmd = &commands[i];
        if (arg && !(c->arg = strdup(arg))) {
            reply(c, 0, "out of memory");
            return;
        }
        if (!commands[i].payload)
            run_request(c, NULL);
        return;
    }
    reply(c, 0,
          "unknown request (valid: token ACCOUNT, accounts, refresh-token ACCOUNT, devices, queue, "
          "queue-flush [ID], queue-hold ID, queue-release ID, queue-delete ID, device-block "
          "NAME, device-unblock NAME)");
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct control_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line;
    if (c->replied)
        return;
    if (!c->cmd) {
        line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > CONTROL_LINE_MAX + 1)
                reply(c, 0, "request line longer than %d bytes", CONTROL_LINE_MAX);
            return;
        }
        on_request_line(c, line, len);
        free(line);
        if (c->replied || !c->cmd->payload)
            return;
    }
    /* the payload line: a secret (1) or a text (2) */
    int text = c->cmd->payload == 2;
    size_t max = text ? CONTROL_TEXT_MAX : CONTROL_PAYLOAD_MAX;
    line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
    if (!line) {
        if (evbuffer_get_length(in) > max + 1)
            reply(c, 0, "payload longer than %zu bytes", max);
        return;
    }
    if (text && control_text_ok(line, len) != 0)
        reply(c, 0, "malformed payload: one line of at most %d printable characters",
              CONTROL_TEXT_MAX);
    else if (!text && control_payload_ok(line, len) != 0)
        reply(c, 0, "malformed payload: one line of printable characters without spaces");
    else
        run_request(c, line);
    OPENSSL_cleanse(line, len);
    free(line);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct control_conn *c = arg;
    if (c->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct control_conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_TIMEOUT)
        log_info("event=control_timeout peer_uid=%lu", c->uid);
    /* EOF, error or timeout: a token wait in flight is cancelled; nobody is left to hear it */
    conn_free(c);
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct control *ctl = arg;
    struct ucred cred = {0};
    socklen_t credlen = sizeof(cred);
    (void)lev;
    (void)sa;
    (void)salen;
    int have = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) == 0;
    if (!have || (cred.uid != getuid() && cred.uid != 0)) {
        log_warn("event=control_refused peer_uid=%ld reason=\"%s\"", have ? (long)cred.uid : -1L,
                 have ? "neither our user nor root" : "no credentials");
        evutil_closesocket(fd);
        return;
    }
    if (ctl->nconns >= CONTROL_MAX_CONNS) {
        static const char busy[] = "error busy: too many control connections\n";
        char junk[512];
        log_warn("event=control_busy connections=%u", ctl->nconns);
        if (write(fd, busy, sizeof(busy) - 1) < 0) {
            /* nothing to do: the peer sees the connection close */
        }
        /* a request already sent and left unread would make the close a reset */
        for (int i = 0; i < 8 && recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
            ;
        evutil_closesocket(fd);
        return;
    }
    struct control_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->ctl = ctl;
    c->uid = (unsigned long)cred.uid;
    c->bev = bufferevent_socket_new(ctl->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->gen = server_gen_ref(ctl->srv->gen);
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    ctl->nconns++;
    struct timeval idle = {.tv_sec = CONTROL_IDLE_SECONDS};
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* stop reading (and so bound memory) once a request line and a payload could be in */
    bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_LINE_MAX + CONTROL_PAYLOAD_MAX + 4);
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    bufferevent_enable(c->bev, EV_READ);
}

/* Remove a socket file left by a daemon that died, but never one somebody answers on, nor
 * anything that is not a socket. 0 ok (nothing there now); -1 with err. */
static int clear_stale(const char *path, const struct sockaddr_un *sun, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "control socket %s: exists and is not a socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    int e = errno;
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen,
                 "control socket %s: another smtp-oauth-proxy is running (it answers there)", path);
        return -1;
    }
    if (e != ECONNREFUSED) {
        snprintf(err, errlen, "control socket %s: %s", path, strerror(e));
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "control socket %s: cannot remove the stale socket: %s", path,
                 strerror(errno));
        return -1;
    }
    log_info("event=control_stale_socket_removed path=%s", path);
    return 0;
}

/* The socket's directory (STATE_DIR by default) may not exist yet when no token store made it:
 * create it, mode 0700, as the token store would. */
static int make_parent(const char *path, char *err, size_t errlen)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], derr[512];
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    size_t n = (size_t)(slash - path);
    memcpy(dir, path, n);
    dir[n] = '\0';
    int r = durable_mkdir(dir, derr, sizeof(derr));
    if (r < 0) {
        snprintf(err, errlen, "control socket %s: %s", path, derr);
        return -1;
    }
    if (r > 0)
        log_info("event=state_dir_created dir=%s", dir);
    return 0;
}

static int bind_socket(struct control *ctl, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    const char *path = ctl->path;
    struct stat st;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "control socket %s: path longer than %zu bytes", path,
                 sizeof(sun.sun_path) - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (make_parent(path, err, errlen) != 0 || clear_stale(path, &sun, err, errlen) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -1;
    }
    /* 0600 from the start: no window in which others could connect */
    mode_t old = umask(0177);
    int rc = bind(fd, (const struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (rc != 0 || listen(fd, CONTROL_MAX_CONNS) != 0 || lstat(path, &st) != 0) {
        if (rc == 0)
            e = errno;
        snprintf(err, errlen, "control socket %s: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    ctl->dev = st.st_dev;
    ctl->ino = st.st_ino;
    return fd;
}

struct control *control_new(struct server *s, char *err, size_t errlen)
{
    struct control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl || !(ctl->path = strdup(s->gen->cfg->control_socket))) {
        free(ctl);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctl->srv = s;
    int fd = bind_socket(ctl, err, errlen);
    if (fd < 0) {
        free(ctl->path);
        free(ctl);
        return NULL;
    }
    ctl->lev = evconnlistener_new(s->base, on_accept, ctl,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!ctl->lev) {
        snprintf(err, errlen, "control socket %s: cannot listen", ctl->path);
        close(fd);
        ctl->ino = 0;
        control_free(ctl);
        return NULL;
    }
    log_info("event=control_listening path=%s", ctl->path);
    return ctl;
}

void control_free(struct control *ctl)
{
    struct stat st;
    if (!ctl)
        return;
    while (ctl->conns)
        conn_free(ctl->conns);
    if (ctl->lev)
        evconnlistener_free(ctl->lev);
    /* only our own socket: a newer daemon may have replaced it */
    if (ctl->ino && lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev && st.st_ino == ctl->ino)
        unlink(ctl->path);
    free(ctl->path);
    free(ctl);
}
