/* `test ACCOUNT [--to ADDR] [--from ADDR]`: the whole path of one account, step by step, as an
 * admin debugging a tenant wants to see it: the token (and the claims that matter, never the
 * token) when the upstream takes one, then the upstream opened exactly as the daemon's pool opens
 * it (upstream_client_cfg: STARTTLS, TLS from the first byte or opportunistic STARTTLS, the client
 * certificate of a connector), AUTH as upstream_auth and upstream_auth_policy say (a token, the
 * password, or none), and with --to a short test message, sent by the daemon's own transaction
 * engine (deliver.h, with the account's sender_rewrite), every command and reply shown. Each
 * refusal comes with what it means and what to change (proxy/smtp/exchange_explain.h,
 * oauth/entra_explain.h). It never asks the daemon for a client-credentials token: it gets its
 * own (or the stored one), so it tests what this host and this config file can do. No password
 * or token is ever printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "common/secret.h"
#include "oauth/entra_explain.h"
#include "oauth/token_response.h"
#include "proxy/admin/cli_int.h"
#include "proxy/upstream/client_session.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_client.h"
#include "proxy/delivery/deliver.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/runtime/tls.h"
#include "proxy/admin/token_claims.h"
#include "proxy/upstream/upstream_pool.h"

#define TEST_ADDR_MAX 254
#define TEST_SHOW_LINES 8
#define TEST_SHOW_WIDTH 300

enum test_step { STEP_OPEN, STEP_AUTH, STEP_MAIL, STEP_RCPT, STEP_DATA, STEP_END, STEP_QUIT };

/* The engine's connection (txn.h) is the session the test opened itself; it stays the test's
 * (release does nothing), so QUIT follows the message. */
struct upstream_conn {
    struct test_run *t;
};

struct test_run {
    struct event_base *base;
    const struct config *cfg;
    const struct cfg_account *a;
    struct client_session *c;
    char *token;
    const char *from, *to;
    enum test_step step;
    enum client_auth_mech mech;
    struct exchange_ctx xctx; /* what the account authenticates with, for the explanations */
    int authed;               /* AUTH was sent and taken (0: the session went on without) */
    int ok;                   /* every step so far worked */
    /* the test message, for the engine */
    char msg[2048];
    size_t msg_len, msg_off;
    struct spool_envelope env;
    char *rcpts[1];
    /* the refusal the engine's transaction met, for the explanation */
    int refused_code;
    char refused_enhanced[16];
    char refused_text[2048];
    struct upstream_conn conn;
};

/* Peer or IdP text on the terminal: printable ASCII, the rest '?', at most max bytes ("..." if
 * there were more: s must have at least max + 1 readable bytes or end before). */
static void put_safe(const char *s, size_t max)
{
    size_t i = 0;
    for (; i < max && s[i]; i++)
        putchar(s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?');
    if (i == max && s[i])
        fputs("...", stdout);
}

static int addr_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TEST_ADDR_MAX || !strchr(s, '@'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '<' || s[i] == '>')
            return 0;
    return 1;
}

static void print_minutes(int64_t at, int64_t now)
{
    int64_t d = at - now;
    if (d >= 0)
        printf(" (in %lld min)", (long long)(d / 60));
    else
        printf(" (EXPIRED %lld min ago)", (long long)(-d / 60));
}

/* One claim: a string, a number or an array of strings. */
static void print_claim(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!v)
        return;
    printf("  %-12s ", name);
    if (cJSON_IsString(v)) {
        put_safe(v->valuestring, TEST_SHOW_WIDTH);
    } else if (cJSON_IsArray(v)) {
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            if (i++ >= 32)
                break;
            if (cJSON_IsString(e)) {
                fputs(i > 1 ? " " : "", stdout);
                put_safe(e->valuestring, TEST_SHOW_WIDTH);
            }
        }
    } else if (cJSON_IsNumber(v)) {
        printf("%.0f", v->valuedouble);
    } else {
        fputs("(not a string)", stdout);
    }
    putchar('\n');
}

/* 1 if the string claim name (space-separated, or an array) holds word. */
static int claim_has(const cJSON *j, const char *name, const char *word)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name), *e;
    if (cJSON_IsString(v)) {
        size_t n = strlen(word);
        for (const char *p = v->valuestring; (p = strstr(p, word)) != NULL; p += n)
            if ((p == v->valuestring || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
                return 1;
    }
    if (!cJSON_IsArray(v))
        return 0;
    cJSON_ArrayForEach(e, v)
    {
        if (cJSON_IsString(e) && strcmp(e->valuestring, word) == 0)
            return 1;
    }
    return 0;
}

static void show_claims(const struct cfg_account *a, const char *token, int64_t now)
{
    cJSON *j = token_claims_decode(token);
    if (!j) {
        printf("claims: the token is not a JWT (an opaque token, as Google's are): nothing to "
               "show\n");
        return;
    }
    static const char *const names[] = {
        "aud", "roles", "scp",   "appid",       "azp",
        "tid", "upn",   "email", "unique_name", "preferred_username"};
    printf("claims (read, not verified; the token itself is not shown):\n");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        print_claim(j, names[i]);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "exp");
    if (cJSON_IsNumber(exp) && exp->valuedouble > 0 && exp->valuedouble < 1e11) {
        char when[40];
        printf("  %-12s %s", "exp", cli_time((int64_t)exp->valuedouble, when, sizeof(when)));
        print_minutes((int64_t)exp->valuedouble, now);
        putchar('\n');
    }
    /* What the upstream will check first, said before it refuses: the audience (a token for
     * the other resource is refused whole) and the permission. */
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(j, "aud");
    const char *audv = cJSON_IsString(aud) ? aud->valuestring : "";
    int aud_graph = strstr(audv, "graph.") != NULL || strstr(audv, "graph-") != NULL ||
                    strstr(audv, "microsoftgraph.") != NULL ||
                    strcmp(audv, "00000003-0000-0000-c000-000000000000") == 0;
    if (a->kind == UPSTREAM_KIND_GRAPH) {
        if (strcmp(a->provider, "microsoft") == 0 && !aud_graph)
            printf("  warning: aud is not Microsoft Graph: Graph will refuse this token (401 "
                   "InvalidAuthenticationToken); the scope must be %s/.default\n",
                   a->graph_url ? a->graph_url : "https://graph.microsoft.com");
        if (!claim_has(j, "roles", "Mail.Send") && !claim_has(j, "scp", "Mail.Send"))
            printf("  warning: neither roles Mail.Send (app-only) nor scp Mail.Send (delegated): "
                   "Graph will refuse to send (403 ErrorAccessDenied); app > API permissions > "
                   "Microsoft Graph > Application permissions > Mail.Send > Grant admin consent\n");
        if (!claim_has(j, "roles", "Mail.ReadWrite") && !claim_has(j, "scp", "Mail.ReadWrite"))
            printf("  warning: no Mail.ReadWrite: messages whose base64 passes 4 MB (scans over "
                   "about 3 MB) are sent as a draft with uploaded attachments, which needs it; "
                   "smaller ones go\n");
        cJSON_Delete(j);
        return;
    }
    if (strcmp(a->provider, "microsoft") == 0 && aud_graph)
        printf(
            "  warning: aud is Microsoft Graph: Exchange Online refuses it for SMTP AUTH "
            "(535 5.7.3); the scope must be Exchange's (https://outlook.office365.com/.default), "
            "or set upstream = graph\n");
    if (strcmp(a->provider, "microsoft") == 0 && !claim_has(j, "roles", "SMTP.SendAsApp") &&
        !claim_has(j, "scp", "SMTP.Send"))
        printf("  warning: neither roles SMTP.SendAsApp (app-only) nor scp SMTP.Send "
               "(delegated): Exchange will refuse it; app > API permissions > Office 365 "
               "Exchange Online > SMTP.SendAsApp > Grant admin consent\n");
    cJSON_Delete(j);
}

/* A reply as the admin sees it; the account's password, should the upstream echo it, never. */
static void print_reply(const struct test_run *t, const struct smtp_reply *r)
{
    char line[TEST_SHOW_WIDTH + 2];
    for (size_t i = 0; i < r->nlines && i < TEST_SHOW_LINES; i++) {
        printf("  <- %03d%c", r->code, i + 1 == r->nlines ? ' ' : '-');
        snprintf(line, sizeof(line), "%s", r->lines[i]);
        secret_redact(line, t->a->upstream.password);
        put_safe(line, TEST_SHOW_WIDTH);
        putchar('\n');
    }
    if (r->nlines > TEST_SHOW_LINES)
        printf("  <- (%zu more lines)\n", r->nlines - TEST_SHOW_LINES);
    if (r->nlines == 0)
        printf("  <- %03d\n", r->code);
}

/* A reply's lines joined by spaces, as the explanation table matches them. */
static void reply_join(const struct smtp_reply *r, char *text, size_t len)
{
    size_t o = 0;
    text[0] = '\0';
    for (size_t i = 0; i < r->nlines && o + 2 < len; i++) {
        int w = snprintf(text + o, len - o, "%s%s", i ? " " : "", r->lines[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* What the table says about a refusal, or that it knows nothing. */
static void explain_reply(const struct test_run *t, int code, const char *enhanced,
                          const char *text)
{
    char buf[1024];
    const struct exchange_explanation *e = exchange_explain_ctx(code, enhanced, text, &t->xctx);
    if (!e) {
        printf("  (no explanation known for %03d %s)\n", code, enhanced);
        return;
    }
    char meaning[512];
    size_t n = 0;
    /* the meaning alone: format the whole line and cut at "; fix: " */
    exchange_explain_format(e, t->a->mailbox, t->a->client_id, buf, sizeof(buf));
    const char *cut = strstr(buf, "; fix: ");
    n = cut ? (size_t)(cut - buf) : strlen(buf);
    snprintf(meaning, sizeof(meaning), "%.*s", (int)n, buf);
    printf("  meaning: %s\n", meaning);
    printf("  fix:     %s\n",
           exchange_explain_fix(e, t->a->mailbox, t->a->client_id, buf, sizeof(buf)));
}

static void on_step(void *arg, const struct smtp_reply *r, const char *err);
static void next(struct test_run *t);

static void finish(struct test_run *t)
{
    if (t->c && client_session_usable(t->c)) {
        t->step = STEP_QUIT;
        printf("-> QUIT\n");
        client_session_command(t->c, "QUIT", on_step, t);
        return;
    }
    client_session_free(t->c);
    t->c = NULL;
    event_base_loopbreak(t->base);
}

static void make_message(struct test_run *t)
{
    char date[64], id[17];
    unsigned char rnd[8];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        memset(rnd, 0, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    int n = snprintf(t->msg, sizeof(t->msg),
                     "From: <%s>\r\nTo: <%s>\r\nSubject: smtp-oauth-proxy test\r\n"
                     "Date: %s\r\nMessage-ID: <%s.test@%s>\r\nMIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                     "A test message from `smtp-oauth-proxy test %s` on %s.\r\n",
                     t->from, t->to, date, id, t->cfg->hostname, t->a->name, t->cfg->hostname);
    t->msg_len = n > 0 && (size_t)n < sizeof(t->msg) ? (size_t)n : 0;
}

static ssize_t message_read(void *src, void *buf, size_t cap, char *err, size_t errlen)
{
    struct test_run *t = src;
    size_t n = t->msg_len - t->msg_off < cap ? t->msg_len - t->msg_off : cap;
    (void)err;
    (void)errlen;
    memcpy(buf, t->msg + t->msg_off, n);
    t->msg_off += n;
    return (ssize_t)n;
}

static struct client_session *conn_session(struct upstream_conn *c)
{
    return c->t->c;
}

static void conn_release(struct upstream_conn *c, int reusable)
{
    (void)c;
    (void)reusable;
}

/* Every command the engine sends and every reply, as the admin sees them. */
static void conn_trace(struct upstream_conn *c, const char *line, const struct smtp_reply *r)
{
    struct test_run *t = c->t;
    if (line) {
        if (strcmp(line, ".") == 0) {
            t->step = STEP_END;
            printf("-> (message: Subject: smtp-oauth-proxy test, %zu bytes)\n", t->msg_len);
        } else if (strncmp(line, "MAIL ", 5) == 0) {
            t->step = STEP_MAIL;
        } else if (strncmp(line, "RCPT ", 5) == 0) {
            t->step = STEP_RCPT;
        } else if (strcmp(line, "DATA") == 0) {
            t->step = STEP_DATA;
        }
        printf("-> %s\n", line);
        return;
    }
    print_reply(t, r);
    int want = t->step == STEP_DATA ? 354 : 0;
    if ((want ? r->code != want : r->code / 100 != 2) && !t->refused_code) {
        t->refused_code = r->code;
        snprintf(t->refused_enhanced, sizeof(t->refused_enhanced), "%s", r->enhanced);
        reply_join(r, t->refused_text, sizeof(t->refused_text));
    }
}

static const struct txn_conn_ops test_conn_ops = {
    .session = conn_session, .release = conn_release, .trace = conn_trace};

static void on_delivered(void *arg, const struct txn_result *res)
{
    struct test_run *t = arg;
    static const char *const names[] = {"connect", "AUTH",    "MAIL", "RCPT",
                                        "DATA",    "message", "QUIT"};
    if (res->status == TXN_OK) {
        printf("the upstream accepted the test message for %s\n", t->to);
    } else {
        if (!t->refused_code) { /* no refusing reply: the proxy's own words, or a lost line */
            printf("  !! ");
            put_safe(res->lost_why[0] ? res->lost_why : res->reply, TEST_SHOW_WIDTH);
            putchar('\n');
        }
        printf("FAILED at %s\n", names[t->step]);
        if (t->refused_code)
            explain_reply(t, t->refused_code, t->refused_enhanced, t->refused_text);
        t->ok = 0;
    }
    finish(t);
}

/* MAIL, RCPT, DATA and the message through the daemon's transaction engine. */
static void send_message(struct test_run *t)
{
    t->conn.t = t;
    make_message(t);
    t->rcpts[0] = (char *)t->to;
    memset(&t->env, 0, sizeof(t->env));
    t->env.mail_from = (char *)t->from;
    t->env.rcpts = t->rcpts;
    t->env.nrcpts = 1;
    struct deliver_body body = {.read = message_read, .size = t->msg_len, .src = t};
    if (!deliver_start_ops(&test_conn_ops, &t->conn, t->a, &t->env, &body, NULL, "test",
                           on_delivered, t)) {
        printf("FAILED: out of memory\n");
        t->ok = 0;
        finish(t);
    }
}

/* The session is open (EHLO after any TLS): say how it is protected, then AUTH as
 * upstream_auth and upstream_auth_policy say, the way the daemon's pool does (upstream_conn.c). */
static void open_done(struct test_run *t)
{
    const struct cfg_upstream *u = &t->a->upstream;
    const struct smtp_caps *caps = client_session_caps(t->c);
    unsigned offered = caps ? caps->auth : 0;
    char offered_s[64];

    if (u->tls == UPSTREAM_TLS_OPPORTUNISTIC)
        fputs(client_session_tls_active(t->c)
                  ? "  (STARTTLS offered and done: the session is encrypted)\n"
                  : "  (no STARTTLS offered: the session goes on in plain text, as upstream_tls "
                    "= opportunistic allows)\n",
              stdout);
    t->step = STEP_AUTH;
    if (u->auth == UPSTREAM_AUTH_NONE || u->policy == UPSTREAM_POLICY_DISABLED) {
        printf("-> no AUTH (%s)\n", u->auth == UPSTREAM_AUTH_NONE
                                        ? "upstream_auth = none"
                                        : "upstream_auth_policy = disabled");
        next(t);
        return;
    }
    if (upstream_pick_mech(u->auth, offered, &t->mech) < 0) {
        smtp_reply_auth_names(offered, offered_s, sizeof(offered_s));
        if (u->policy == UPSTREAM_POLICY_ENABLED) {
            printf("-> no AUTH: upstream_auth = %s but the upstream offers AUTH %s; "
                   "upstream_auth_policy = enabled goes on without it\n",
                   config_upstream_auth_name(u->auth), offered_s);
            next(t);
            return;
        }
        printf("FAILED at AUTH: upstream_auth = %s but the upstream offers AUTH %s\n",
               config_upstream_auth_name(u->auth), offered_s);
        t->ok = 0;
        finish(t);
        return;
    }
    t->authed = 1;
    if (t->mech == CLIENT_AUTH_PLAIN || t->mech == CLIENT_AUTH_LOGIN) {
        printf("-> AUTH %s as ", client_auth_mech_name(t->mech));
        put_safe(u->username, TEST_SHOW_WIDTH);
        printf(" (password not shown)\n");
        client_session_auth(t->c, t->mech, u->username, u->password, on_step, t);
        return;
    }
    if (!t->token) { /* policy enabled: the token step was left for an upstream that takes one */
        printf("FAILED at AUTH: no token\n");
        t->ok = 0;
        finish(t);
        return;
    }
    printf("-> AUTH %s as %s (token not shown)\n", client_auth_mech_name(t->mech), t->a->mailbox);
    client_session_auth(t->c, t->mech, t->a->mailbox, t->token, on_step, t);
    secret_free(t->token); /* not kept by the session either */
    t->token = NULL;
}

static void next(struct test_run *t)
{
    switch (t->step) {
    case STEP_OPEN:
        open_done(t);
        return;
    case STEP_AUTH:
        if (!t->to)
            finish(t);
        else
            send_message(t);
        return;
    default:
        finish(t);
        return;
    }
}

static void on_step(void *arg, const struct smtp_reply *r, const char *err)
{
    struct test_run *t = arg;
    static const char *const names[] = {"connect", "AUTH",    "MAIL", "RCPT",
                                        "DATA",    "message", "QUIT"};
    if (t->step == STEP_QUIT) {
        if (r)
            print_reply(t, r);
        client_session_free(t->c);
        t->c = NULL;
        event_base_loopbreak(t->base);
        return;
    }
    if (!r) {
        printf("  !! ");
        put_safe(err ? err : "failed", TEST_SHOW_WIDTH);
        printf("\nFAILED at %s\n", names[t->step]);
        t->ok = 0;
        finish(t);
        return;
    }
    print_reply(t, r);
    int good = t->step == STEP_AUTH ? r->code == 235 : r->code / 100 == 2;
    if (!good) {
        char text[2048];
        printf("FAILED at %s\n", names[t->step]);
        reply_join(r, text, sizeof(text));
        explain_reply(t, r->code, r->enhanced, text);
        t->ok = 0;
        finish(t);
        return;
    }
    next(t);
}

/* Connect and go through the steps on base. The TLS context and the session's settings are the
 * daemon's (server_gen.c, upstream_client_cfg): its TLS mode, CA and client certificate. 0 when
 * every step worked. */
static int run_upstream(struct test_run *t, struct event_base *base)
{
    const struct cfg_account *a = t->a;
    char err[768];
    SSL_CTX *ctx = tls_client_ctx_new_cert(a->upstream.ca_file, a->upstream.client_certificate,
                                           a->upstream.client_key, err, sizeof(err));
    if (!ctx) {
        printf("FAILED: upstream TLS: %s\n", err);
        return -1;
    }
    struct evdns_base *dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    struct client_cfg cc;
    upstream_client_cfg(t->cfg, a, ctx, "test", &cc);
    t->base = base;
    t->c = client_session_new(base, dns, &cc);
    if (!t->c) {
        printf("FAILED: cannot start the upstream session\n");
        t->ok = 0;
    } else {
        printf("-> connect %s port %u, %s", a->upstream.host, (unsigned)a->upstream.port,
               cc.tls == CLIENT_TLS_IMPLICIT        ? "TLS, EHLO (upstream_tls = implicit)"
               : cc.tls == CLIENT_TLS_OPPORTUNISTIC ? "EHLO, STARTTLS if offered, EHLO "
                                                      "(upstream_tls = opportunistic)"
                                                    : "EHLO, STARTTLS, EHLO");
        if (a->upstream.client_certificate) {
            printf(", client certificate ");
            put_safe(a->upstream.client_certificate, TEST_SHOW_WIDTH);
        }
        putchar('\n');
        t->step = STEP_OPEN;
        client_session_open(t->c, on_step, t);
        event_base_dispatch(base);
        client_session_free(t->c); /* only if the loop ended early */
        t->c = NULL;
    }
    if (dns)
        evdns_base_free(dns, 0);
    SSL_CTX_free(ctx);
    return t->ok ? 0 : -1;
}

/* A refresh token has one refresher: while the daemon runs, using the refresh token here would
 * rotate it behind the daemon's back (an IdP that revokes the old one then locks the daemon
 * out). So such an account's token comes from the daemon. 1 got it (t->token), 0 no daemon,
 * -1 failed (said why). */
static int get_token_from_daemon(struct test_run *t)
{
    char req[256], err[1024];
    char *buf = NULL;
    const char *body = NULL;
    snprintf(req, sizeof(req), "token %s", t->a->name);
    switch (control_client_call(t->cfg->control_socket, req, NULL, CLI_DAEMON_TIMEOUT_MS, &buf,
                                &body, err, sizeof(err))) {
    case CONTROL_CLIENT_NO_DAEMON:
        return 0;
    case CONTROL_CLIENT_FAILED:
        printf("token: FAILED (from the running daemon): ");
        put_safe(err, strlen(err));
        putchar('\n');
        return -1;
    case CONTROL_CLIENT_OK:
        break;
    }
    size_t n = strcspn(body, "\r\n");
    t->token = n ? calloc(1, n + 1) : NULL;
    if (t->token)
        memcpy(t->token, body, n);
    secret_free(buf);
    if (!t->token) {
        printf("token: FAILED: the daemon sent no token\n");
        return -1;
    }
    printf("token: ok, from the running daemon (it alone uses the refresh token)\n");
    return 1;
}

/* The token step: 0 and t->token, or -1 after saying why (and what to do). */
static int get_token(struct test_run *t, struct cli_offline *o)
{
    char err[1024];
    int64_t expires_at = 0, now = (int64_t)time(NULL);
    if (strcmp(t->a->grant, "refresh_token") == 0) {
        int r = get_token_from_daemon(t);
        if (r != 0) {
            if (r > 0)
                show_claims(t->a, t->token, now);
            return r > 0 ? 0 : -1;
        }
    }
    if (cli_offline_token(o, &t->token, &expires_at, err, sizeof(err)) != 0) {
        printf("token: FAILED: ");
        put_safe(err, sizeof(err) - 1);
        putchar('\n');
        const struct entra_explanation *e = entra_explain(token_response_aadsts(err));
        if (e)
            printf("  meaning: %s\n  fix:     %s\n", e->meaning, e->fix);
        return -1;
    }
    char when[40];
    printf("token: ok, expires %s", cli_time(expires_at, when, sizeof(when)));
    print_minutes(expires_at, now);
    putchar('\n');
    show_claims(t->a, t->token, now);
    return 0;
}

int cli_test(struct config *cfg, int argc, char **argv)
{
    const char *name = NULL, *to = NULL, *from = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else
            name = NULL, argc = -1;
    }
    if (!name || argc < 0) {
        fprintf(stderr,
                "usage: smtp-oauth-proxy [--config FILE] test ACCOUNT [--to ADDR] [--from ADDR]\n");
        return 2;
    }
    const struct cfg_account *a = cli_account(cfg, name);
    if (!a)
        return 1;
    if (!from)
        from = a->mailbox;
    if ((to && !addr_ok(to)) || (from && !addr_ok(from))) {
        fprintf(stderr, "smtp-oauth-proxy: --to and --from take one plain address "
                        "(user@domain, no spaces or <>)\n");
        return 2;
    }
    const struct cfg_upstream *u = &a->upstream;
    int graph = a->kind == UPSTREAM_KIND_GRAPH;
    int token = graph || config_upstream_needs_token(u);
    if (graph) {
        printf("account %s: provider %s, grant %s, mailbox %s, upstream Microsoft Graph %s\n",
               a->name, a->provider, a->grant, a->mailbox, a->graph_url);
    } else if (token) {
        printf("account %s: provider %s, grant %s, mailbox %s, upstream %s:%u\n", a->name,
               a->provider, a->grant, a->mailbox, a->upstream.host, (unsigned)a->upstream.port);
    } else {
        printf("account %s: upstream_auth %s, mailbox %s, upstream %s:%u\n", a->name,
               config_upstream_auth_name(u->auth), a->mailbox, a->upstream.host,
               (unsigned)a->upstream.port);
    }
    fflush(stdout);

    struct test_run t = {.cfg = cfg, .a = a, .from = from, .to = to, .ok = 1};
    t.xctx.cred = token                               ? EXCHANGE_CRED_TOKEN
                  : config_upstream_needs_password(u) ? EXCHANGE_CRED_PASSWORD
                                                      : EXCHANGE_CRED_NONE;
    t.xctx.hve = exchange_host_is_hve(u->host);
    int rc;
    if (token) {
        char err[1024];
        struct cli_offline o;
        if (cli_offline_open(&o, cfg, a, 0, err, sizeof(err)) != 0) {
            printf("FAILED: %s\n", err);
            return 1;
        }
        rc = get_token(&t, &o);
        fflush(stdout);
        if (rc == 0 && graph && to) {
            make_message(&t);
            rc = cli_test_graph(cfg, a, &o, t.msg, t.msg_len, to);
            t.authed = rc == 0;
        } else if (rc == 0 && graph) {
            t.authed = 1; /* Graph has no session to open: the token is what can be checked */
        } else if (rc == 0) {
            rc = run_upstream(&t, o.base);
        }
        secret_free(t.token);
        cli_offline_close(&o);
    } else {
        /* no provider, no token store, no discovery: only the upstream */
        if (u->auth == UPSTREAM_AUTH_NONE)
            printf("token: none needed (upstream_auth = none: no AUTH)\n");
        else if (u->policy == UPSTREAM_POLICY_DISABLED)
            printf("token: none needed (upstream_auth_policy = disabled: no AUTH)\n");
        else
            printf("token: none needed (upstream_auth = %s: upstream_username and the password "
                   "in upstream_password_file)\n",
                   config_upstream_auth_name(u->auth));
        fflush(stdout);
        struct event_base *base = event_base_new();
        if (!base) {
            printf("FAILED: cannot create the event loop\n");
            return 1;
        }
        rc = run_upstream(&t, base);
        event_base_free(base);
    }
    if (rc != 0)
        printf("test FAILED\n");
    else if (graph)
        printf("%s\n", to ? "ok: token and the test message through Microsoft Graph worked"
                          : "ok: the token worked (add --to ADDR to send a message through "
                            "Microsoft Graph)");
    else if (token && t.authed)
        printf("%s\n", to ? "ok: token, AUTH and the test message all worked"
                          : "ok: token and AUTH worked (add --to ADDR to send a message)");
    else
        printf("ok: %s%s\n", t.authed ? "AUTH" : "the connection (without AUTH)",
               to ? " and the test message worked" : " worked (add --to ADDR to send a message)");
    fflush(stdout);
    return rc == 0 ? 0 : 1;
}
