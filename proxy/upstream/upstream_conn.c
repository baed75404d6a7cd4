/* Opening one upstream connection for the pool: connect, TLS as upstream_tls says, EHLO
 * (client_session.h), then AUTH as upstream_auth and upstream_auth_policy say: a token from the
 * account's cache (asked for in parallel with the connect when AUTH is required) with XOAUTH2 or
 * OAUTHBEARER and one more try with a fresh token on a 535; or upstream_username and the password
 * with PLAIN or LOGIN; or nothing (upstream_auth = none, policy disabled, or policy enabled and
 * the EHLO offers no usable mechanism: logged once per connection). Every failure is logged
 * here once (event=upstream_failed, with explain= when Exchange's table knows the reply) and
 * handed to the pool with the 4xx a waiting device hears. */
#include "proxy/upstream/upstream_pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/token_cache.h"
#include "proxy/config/config.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/runtime/metrics.h"
#include "proxy/runtime/server_gen.h"

#define CONN_REPLY_MAX 4096

static const char *const REPLY_AUTH_TEMP =
    "454 4.7.0 Temporary authentication failure upstream, try again later";

int64_t upstream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct upstream_conn *upstream_conn_new(struct event_base *base, struct evdns_base *dns,
                                        struct metrics *m, struct server_gen *gen,
                                        const struct cfg_account *acct, const char *log_id)
{
    struct upstream_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->dns = dns;
    c->metrics = m;
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

/* What the account authenticates with and where, for the explanations. */
static struct exchange_ctx conn_ctx(const struct upstream_conn *c)
{
    const struct cfg_upstream *u = &c->acct->upstream;
    struct exchange_ctx x = {.cred = EXCHANGE_CRED_NONE, .hve = exchange_host_is_hve(u->host)};
    if (config_upstream_needs_token(u))
        x.cred = EXCHANGE_CRED_TOKEN;
    else if (config_upstream_needs_password(u))
        x.cred = EXCHANGE_CRED_PASSWORD;
    return x;
}

/* The open failed: log it once, then let the pool tell the lease (and close c). rep: the
 * upstream's refusing reply, if any (for explain= and the borrower). */
static void conn_fail(struct upstream_conn *c, const char *reply, const char *why,
                      const struct smtp_reply *rep, const char *rep_text)
{
    char safe[600], explain[900];
    struct exchange_ctx x = conn_ctx(c);
    log_warn("event=upstream_failed session=%s account=%s op=MAIL reason=%s%s", c->log_id,
             c->acct->name, log_safe(safe, sizeof(safe), why, strlen(why)),
             exchange_explain_kv_ctx(rep ? rep->code : 0, rep ? rep->enhanced : NULL, rep_text,
                                     c->acct->mailbox, c->acct->client_id, &x, explain,
                                     sizeof(explain)));
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
    if (c->opened && c->mech_picked)
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
    metrics_upstream_reply(c->metrics, METRICS_CMD_AUTH, rep->code, rep->enhanced);
    if (rep->code == 235) {
        drop_token(c);
        c->authed = 1;
        log_debug("event=upstream_auth_ok session=%s account=%s mech=%s", c->log_id, c->acct->name,
                  client_auth_mech_name(c->mech));
        upstream_pool_conn_opened(c, NULL);
        return;
    }
    char text[CONN_REPLY_MAX];
    smtp_reply_text(rep, text, sizeof(text));
    int password = c->mech == CLIENT_AUTH_PLAIN || c->mech == CLIENT_AUTH_LOGIN;
    if (rep->code == 535 && !c->auth_retried && !password) {
        /* The token may have been revoked or be for the wrong audience: one fresh token. */
        char safe[300], explain[900];
        struct exchange_ctx x = conn_ctx(c);
        log_warn("event=upstream_auth_retry session=%s account=%s upstream=%s%s", c->log_id,
                 c->acct->name, log_safe(safe, sizeof(safe), text, strcspn(text, "\r\n")),
                 exchange_explain_kv_ctx(rep->code, rep->enhanced, text, c->acct->mailbox,
                                         c->acct->client_id, &x, explain, sizeof(explain)));
        c->auth_retried = 1;
        token_cache_invalidate(c->tokens, c->token);
        drop_token(c);
        request_token(c);
        return;
    }
    /* Never 5xx for a token or password problem: the device should try again later (and the
     * admin reads the log). The upstream's text may echo what it was sent: never the password. */
    char why[CONN_REPLY_MAX + 160];
    if (password) {
        secret_redact(text, c->acct->upstream.password);
        snprintf(why, sizeof(why),
                 "AUTH %s refused: %s (check upstream_username and the password in "
                 "upstream_password_file)",
                 client_auth_mech_name(c->mech), text);
    } else {
        snprintf(why, sizeof(why), "AUTH %s refused: %s", client_auth_mech_name(c->mech), text);
    }
    conn_fail(c, REPLY_AUTH_TEMP, why, rep, text);
}

int upstream_pick_mech(enum upstream_auth want, unsigned offered, enum client_auth_mech *mech)
{
    int x = (offered & SMTP_AUTH_XOAUTH2) != 0, o = (offered & SMTP_AUTH_OAUTHBEARER) != 0;
    if (want == UPSTREAM_AUTH_PLAIN || want == UPSTREAM_AUTH_LOGIN) {
        unsigned bit = want == UPSTREAM_AUTH_PLAIN ? SMTP_AUTH_PLAIN : SMTP_AUTH_LOGIN;
        *mech = want == UPSTREAM_AUTH_PLAIN ? CLIENT_AUTH_PLAIN : CLIENT_AUTH_LOGIN;
        return (offered & bit) ? 0 : -1;
    }
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

/* AUTH with the token (the mechanism is picked and the token is here). */
static void start_auth(struct upstream_conn *c)
{
    if (!c->token || !c->mech_picked)
        return;
    client_session_auth(c->cs, c->mech, c->acct->mailbox, c->token, on_auth, c);
}

/* The connection goes on without AUTH: ready for the pool. */
static void conn_unauthenticated(struct upstream_conn *c)
{
    if (c->token_wait) {
        token_cache_cancel(c->token_wait);
        c->token_wait = NULL;
    }
    drop_token(c);
    upstream_pool_conn_opened(c, NULL);
}

/* EHLO (after TLS) is in: authenticate as upstream_auth and upstream_auth_policy say. */
static void after_open(struct upstream_conn *c)
{
    const struct cfg_upstream *u = &c->acct->upstream;
    const struct smtp_caps *caps = client_session_caps(c->cs);
    unsigned offered = caps ? caps->auth : 0;
    char offered_s[64], why[256], safe[300];

    if (u->auth == UPSTREAM_AUTH_NONE || u->policy == UPSTREAM_POLICY_DISABLED) {
        log_debug("event=upstream_unauthenticated session=%s account=%s host=%s reason=\"%s\"",
                  c->log_id, c->acct->name, u->host,
                  u->auth == UPSTREAM_AUTH_NONE ? "upstream_auth = none"
                                                : "upstream_auth_policy = disabled");
        conn_unauthenticated(c);
        return;
    }
    if (upstream_pick_mech(u->auth, offered, &c->mech) < 0) {
        snprintf(why, sizeof(why), "upstream_auth = %s but the upstream offers AUTH %s",
                 config_upstream_auth_name(u->auth),
                 smtp_reply_auth_names(offered, offered_s, sizeof(offered_s)));
        if (u->policy == UPSTREAM_POLICY_ENABLED) {
            /* Domino's "enabled": authenticate when the server can, else send without */
            log_info("event=upstream_unauthenticated session=%s account=%s host=%s reason=%s "
                     "policy=enabled",
                     c->log_id, c->acct->name, u->host,
                     log_safe(safe, sizeof(safe), why, strlen(why)));
            conn_unauthenticated(c);
            return;
        }
        conn_fail(c, REPLY_AUTH_TEMP, why, NULL, NULL);
        return;
    }
    c->mech_picked = 1;
    if (c->mech == CLIENT_AUTH_PLAIN || c->mech == CLIENT_AUTH_LOGIN) {
        client_session_auth(c->cs, c->mech, u->username, u->password, on_auth, c);
        return;
    }
    if (c->token)
        start_auth(c);
    else if (!c->token_wait)
        request_token(c); /* policy enabled: asked for only now; may fail and free c */
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
    after_open(c);
}

static enum client_tls_mode tls_mode(enum upstream_tls t)
{
    switch (t) {
    case UPSTREAM_TLS_IMPLICIT:
        return CLIENT_TLS_IMPLICIT;
    case UPSTREAM_TLS_OPPORTUNISTIC:
        return CLIENT_TLS_OPPORTUNISTIC;
    default:
        return CLIENT_TLS_STARTTLS;
    }
}

void upstream_client_cfg(const struct config *cfg, const struct cfg_account *acct, SSL_CTX *ssl_ctx,
                         const char *log_id, struct client_cfg *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->host = acct->upstream.host;
    cc->port = acct->upstream.port;
    cc->helo = cfg->hostname;
    cc->ssl_ctx = ssl_ctx;
    cc->connect_timeout = cfg->upstream_connect_timeout;
    cc->reply_timeout = cfg->upstream_timeout;
    cc->log_id = log_id;
    cc->tls = tls_mode(acct->upstream.tls);
}

void upstream_conn_open(struct upstream_conn *c)
{
    struct client_cfg cc;
    upstream_client_cfg(c->gen->cfg, c->acct, server_gen_tls_client(c->gen, c->acct), c->log_id,
                        &cc);
    c->auth_retried = 0;
    c->cs = client_session_new(c->base, c->dns, &cc);
    if (!c->cs) {
        conn_fail(c, "451 4.3.0 Cannot start upstream session", "client_session_new failed", NULL,
                  NULL);
        return;
    }
    client_session_open(c->cs, on_open, c);
    /* AUTH with a token is certain: ask for it while connecting (last: may fail and free c) */
    if (config_upstream_needs_token(&c->acct->upstream) &&
        c->acct->upstream.policy == UPSTREAM_POLICY_REQUIRED)
        request_token(c);
}
