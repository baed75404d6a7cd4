/* Opening one upstream connection for the pool: connect, STARTTLS, EHLO (client_session.h), a
 * token from the account's cache (asked for in parallel with the connect), AUTH with the
 * mechanism upstream_auth picks from what the EHLO offers, one more try with a fresh token on a
 * 535. Every failure is logged here once (event=upstream_failed, with explain= when Exchange's
 * table knows the reply) and handed to the pool with the 4xx a waiting device hears. */
#include "proxy/upstream_pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/token_cache.h"
#include "proxy/config.h"
#include "proxy/exchange_explain.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/server_gen.h"

#define CONN_REPLY_MAX 4096

static const char *const REPLY_AUTH_TEMP =
    "454 4.7.0 Temporary authentication failure upstream, try again later";

int64_t upstream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct upstream_conn *upstream_conn_new(struct server *srv, struct server_gen *gen,
                                        const struct cfg_account *acct, const char *log_id)
{
    struct upstream_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = srv;
    c->gen = server_gen_ref(gen);
    c->acct = acct;
    c->tokens = server_gen_account_tokens(gen, acct);
    c->state = UPSTREAM_CONN_OPENING;
    snprintf(c->log_id, sizeof(c->log_id), "%s", log_id ? log_id : "-");
    return c;
}

static void drop_token(struct upstream_conn *c)
{
    secret_free(c->token);
    c->token = NULL;
}

void upstream_conn_close(struct upstream_conn *c, int polite)
{
    if (!c)
        return;
    if (c->token_wait)
        token_cache_cancel(c->token_wait);
    drop_token(c);
    if (c->idle_timer)
        event_free(c->idle_timer);
    if (c->cs) {
        if (polite && client_session_usable(c->cs))
            client_session_quit(c->cs); /* frees itself once answered */
        else
            client_session_free(c->cs);
    }
    server_gen_unref(c->gen);
    free(c);
}

/* The open failed: log it once, then let the pool tell the lease (and close c). rep: the
 * upstream's refusing reply, if any (for explain= and the borrower). */
static void conn_fail(struct upstream_conn *c, const char *reply, const char *why,
                      const struct smtp_reply *rep, const char *rep_text)
{
    char safe[600], explain[900];
    log_warn("event=upstream_failed session=%s account=%s op=MAIL reason=%s%s", c->log_id,
             c->acct->name, log_safe(safe, sizeof(safe), why, strlen(why)),
             exchange_explain_kv(rep ? rep->code : 0, rep ? rep->enhanced : NULL, rep_text,
                                 c->acct->mailbox, c->acct->client_id, explain, sizeof(explain)));
    if (c->token_wait) {
        token_cache_cancel(c->token_wait);
        c->token_wait = NULL;
    }
    drop_token(c);
    struct upstream_failure f = {.reply = reply, .why = why, .rep = rep, .rep_text = rep_text};
    upstream_pool_conn_opened(c, &f);
}

static void start_auth(struct upstream_conn *c);

/* When the token just handed out expires, on our monotonic clock (the cache's wall-clock
 * figure converted now, so later clock steps do not matter). */
static int64_t token_deadline(const struct upstream_conn *c)
{
    struct token_cache_stats st;
    struct timespec wall;
    token_cache_stats(c->tokens, &st);
    if (st.expires_at_wall <= 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t left_ms =
        st.expires_at_wall * 1000 - ((int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000);
    return upstream_now_ms() + left_ms;
}

static void on_token(void *arg, const char *token, const char *err)
{
    struct upstream_conn *c = arg;
    c->token_wait = NULL;
    if (!token) {
        char why[512];
        snprintf(why, sizeof(why), "no access token: %s", err ? err : "unknown error");
        conn_fail(c,
                  "451 4.7.0 Temporary authentication failure upstream (no access token), try "
                  "again later",
                  why, NULL, NULL);
        return;
    }
    drop_token(c);
    c->token = secret_dup(token);
    if (!c->token) {
        conn_fail(c, "451 4.3.0 Out of memory", "out of memory", NULL, NULL);
        return;
    }
    /* the cache's current token is the one just handed out */
    c->token_deadline_ms = token_deadline(c);
    if (c->opened)
        start_auth(c);
}

/* May run on_token (and so fail and free c) before returning: touch nothing after it. */
static void request_token(struct upstream_conn *c)
{
    struct token_wait *w = token_cache_get(c->tokens, on_token, c);
    if (w)
        c->token_wait = w;
}

static void on_auth(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct upstream_conn *c = arg;
    if (!rep) {
        conn_fail(c, "451 4.4.2 Upstream connection lost, try again later", err ? err : "lost",
                  NULL, NULL);
        return;
    }
    metrics_upstream_reply(c->srv->metrics, METRICS_CMD_AUTH, rep->code, rep->enhanced);
    if (rep->code == 235) {
        drop_token(c);
        log_debug("event=upstream_auth_ok session=%s account=%s mech=%s", c->log_id, c->acct->name,
                  client_auth_mech_name(c->mech));
        upstream_pool_conn_opened(c, NULL);
        return;
    }
    char text[CONN_REPLY_MAX];
    smtp_reply_text(rep, text, sizeof(text));
    if (rep->code == 535 && !c->auth_retried) {
        /* The token may have been revoked or be for the wrong audience: one fresh token. */
        char safe[300], explain[900];
        log_warn("event=upstream_auth_retry session=%s account=%s upstream=%s%s", c->log_id,
                 c->acct->name, log_safe(safe, sizeof(safe), text, strcspn(text, "\r\n")),
                 exchange_explain_kv(rep->code, rep->enhanced, text, c->acct->mailbox,
                                     c->acct->client_id, explain, sizeof(explain)));
        c->auth_retried = 1;
        token_cache_invalidate(c->tokens, c->token);
        drop_token(c);
        request_token(c);
        return;
    }
    /* Never 5xx for a token problem: the device should try again later. */
    char why[CONN_REPLY_MAX + 64];
    snprintf(why, sizeof(why), "AUTH %s refused: %s", client_auth_mech_name(c->mech), text);
    conn_fail(c, REPLY_AUTH_TEMP, why, rep, text);
}

static const char *upstream_auth_name(enum upstream_auth a)
{
    switch (a) {
    case UPSTREAM_AUTH_XOAUTH2:
        return "xoauth2";
    case UPSTREAM_AUTH_OAUTHBEARER:
        return "oauthbearer";
    default:
        return "auto";
    }
}

/* The SASL mechanisms an EHLO offered, space-separated ("none" if none). */
static const char *offered_mechs(unsigned bits, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *name;
    } mechs[] = {{SMTP_AUTH_PLAIN, "PLAIN"},
                 {SMTP_AUTH_LOGIN, "LOGIN"},
                 {SMTP_AUTH_XOAUTH2, "XOAUTH2"},
                 {SMTP_AUTH_OAUTHBEARER, "OAUTHBEARER"}};
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
        if (!(bits & mechs[i].bit))
            continue;
        int w = snprintf(buf + o, len - o, "%s%s", o ? " " : "", mechs[i].name);
        if (w < 0 || (size_t)w >= len - o)
            break;
        o += (size_t)w;
    }
    if (o == 0)
        snprintf(buf, len, "none");
    return buf;
}

/* upstream_auth against what the EHLO offers: 0 and *mech, or -1. auto prefers XOAUTH2. */
static int pick_mech(enum upstream_auth want, unsigned offered, enum client_auth_mech *mech)
{
    int x = (offered & SMTP_AUTH_XOAUTH2) != 0, o = (offered & SMTP_AUTH_OAUTHBEARER) != 0;
    if ((want == UPSTREAM_AUTH_XOAUTH2 || want == UPSTREAM_AUTH_AUTO) && x) {
        *mech = CLIENT_AUTH_XOAUTH2;
        return 0;
    }
    if ((want == UPSTREAM_AUTH_OAUTHBEARER || want == UPSTREAM_AUTH_AUTO) && o) {
        *mech = CLIENT_AUTH_OAUTHBEARER;
        return 0;
    }
    return -1;
}

static void start_auth(struct upstream_conn *c)
{
    if (!c->token)
        return;
    const struct smtp_caps *caps = client_session_caps(c->cs);
    enum upstream_auth want = c->acct->upstream.auth;
    if (pick_mech(want, caps ? caps->auth : 0, &c->mech) < 0) {
        char offered[64], why[160];
        snprintf(why, sizeof(why), "upstream_auth = %s but the upstream offers AUTH %s",
                 upstream_auth_name(want),
                 offered_mechs(caps ? caps->auth : 0, offered, sizeof(offered)));
        conn_fail(c, REPLY_AUTH_TEMP, why, NULL, NULL);
        return;
    }
    client_session_auth(c->cs, c->mech, c->acct->mailbox, c->token, on_auth, c);
}

static void on_open(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct upstream_conn *c = arg;
    if (!rep || rep->code / 100 != 2) {
        char why[CONN_REPLY_MAX];
        if (rep)
            smtp_reply_text(rep, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "%s", err ? err : "connect failed");
        conn_fail(c, "451 4.4.1 Upstream server unavailable, try again later", why, rep, why);
        return;
    }
    c->opened = 1;
    if (c->token)
        start_auth(c);
}

void upstream_conn_open(struct upstream_conn *c)
{
    const struct config *cfg = c->gen->cfg;
    struct client_cfg cc = {
        .host = c->acct->upstream.host,
        .port = c->acct->upstream.port,
        .helo = cfg->hostname,
        .ssl_ctx = server_gen_tls_client(c->gen, c->acct),
        .connect_timeout = cfg->upstream_connect_timeout,
        .reply_timeout = cfg->upstream_timeout,
        .log_id = c->log_id,
    };
    c->auth_retried = 0;
    c->cs = client_session_new(c->srv->base, c->srv->dns, &cc);
    if (!c->cs) {
        conn_fail(c, "451 4.3.0 Cannot start upstream session", "client_session_new failed", NULL,
                  NULL);
        return;
    }
    client_session_open(c->cs, on_open, c);
    request_token(c); /* last: may fail and free c */
}
