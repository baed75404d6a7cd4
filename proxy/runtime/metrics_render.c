/* The registry in Prometheus' text exposition format, version 0.0.4: a HELP and a TYPE line per
 * metric, then one line per series. Token figures come live from the caches, not counted twice. */
#include "proxy/runtime/metrics_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include <event2/buffer.h>

#include "oauth/token_cache.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/config/config.h"

#define P "smtp_oauth_proxy_"

const char *metrics_escape(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    if (dstlen == 0)
        return dst;
    for (; *src; src++) {
        const char *rep = NULL;
        char one[2] = {*src, '\0'};
        if (*src == '\\')
            rep = "\\\\";
        else if (*src == '"')
            rep = "\\\"";
        else if (*src == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = rep[1] ? 2 : 1;
        if (o + n >= dstlen)
            break; /* never half an escape */
        for (size_t i = 0; i < n; i++)
            dst[o++] = rep[i];
    }
    dst[o] = '\0';
    return dst;
}

struct out {
    struct evbuffer *buf;
    int failed;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!o->failed && evbuffer_add_vprintf(o->buf, fmt, ap) < 0)
        o->failed = 1;
    va_end(ap);
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    emit(o, "# HELP " P "%s %s\n# TYPE " P "%s %s\n", name, help, name, type);
}

static void render_sessions(const struct metrics *m, struct out *o)
{
    char l[200];
    head(o, "sessions_open", "gauge", "Device sessions open now, by listener.");
    for (size_t i = 0; i < m->nlisteners; i++)
        emit(o, P "sessions_open{listener=\"%s\"} %lu\n",
             metrics_escape(l, sizeof(l), m->listeners[i].name), m->listeners[i].open);
    head(o, "sessions_total", "counter", "Device sessions accepted, by listener.");
    for (size_t i = 0; i < m->nlisteners; i++)
        emit(o, P "sessions_total{listener=\"%s\"} %lu\n",
             metrics_escape(l, sizeof(l), m->listeners[i].name), m->listeners[i].total);
}

static void render_messages(const struct metrics *m, struct out *o)
{
    char a[200];
    head(o, "messages_total", "counter",
         "Messages by account and the result the device heard (delivered: upstream 2xx; "
         "refused: 5xx; deferred: 4xx; queued: 250 once committed to the spool).");
    for (size_t i = 0; i < m->cfg->naccounts; i++) {
        metrics_escape(a, sizeof(a), m->cfg->accounts[i].name);
        for (size_t r = 0; r < METRICS_NRESULTS; r++)
            emit(o, P "messages_total{account=\"%s\",result=\"%s\"} %lu\n", a,
                 metrics_result_names[r], m->accounts[i].messages[r]);
    }
    head(o, "relayed_bytes_total", "counter",
         "Message body bytes the upstream accepted, by account.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(o, P "relayed_bytes_total{account=\"%s\"} %" PRIu64 "\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name), m->accounts[i].bytes);
    head(o, "upstream_connections_opened_total", "counter",
         "Upstream connections opened (each one a TLS handshake and an AUTH), by account.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(o, P "upstream_connections_opened_total{account=\"%s\"} %lu\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name), m->accounts[i].conns_opened);
    head(o, "upstream_connection_reuses_total", "counter",
         "Messages sent over an already open upstream connection, by account.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(o, P "upstream_connection_reuses_total{account=\"%s\"} %lu\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name), m->accounts[i].conns_reused);
}

static void render_replies(const struct metrics *m, struct out *o)
{
    head(o, "upstream_replies_total", "counter",
         "Upstream replies to AUTH, MAIL, RCPT and the end of DATA, by class and enhanced "
         "status code.");
    for (size_t i = 0; i < m->nreplies; i++) {
        const struct metrics_reply *r = &m->replies[i];
        char klass[8];
        if (r->klass)
            snprintf(klass, sizeof(klass), "%dxx", r->klass);
        else
            snprintf(klass, sizeof(klass), "other");
        emit(o, P "upstream_replies_total{command=\"%s\",class=\"%s\",code=\"%s\"} %lu\n",
             metrics_cmd_names[r->cmd], klass, r->code, r->count);
    }
}

static void render_tokens(const struct metrics *m, struct out *o, metrics_token_stats_fn stats,
                          void *arg, int64_t now)
{
    static const struct {
        const char *name, *type, *help;
    } defs[] = {
        {"token_requests_total", "counter", "Token requests to the identity provider."},
        {"token_failures_total", "counter", "Token requests that failed."},
        {"token_expiry_seconds", "gauge",
         "Seconds until the account's access token expires (0: it holds none)."},
        {"token_reauthorize_required", "gauge",
         "1 when a person must run `smtp-oauth-proxy authorize` for the account."},
    };
    char a[200];
    for (size_t d = 0; d < sizeof(defs) / sizeof(defs[0]); d++) {
        head(o, defs[d].name, defs[d].type, defs[d].help);
        for (size_t i = 0; stats && i < m->cfg->naccounts; i++) {
            struct token_cache_stats st;
            if (stats(arg, i, &st) != 0)
                continue;
            int64_t v;
            if (d == 0)
                v = (int64_t)st.requests;
            else if (d == 1)
                v = (int64_t)st.failures;
            else if (d == 2)
                v = st.expires_at_wall > now ? st.expires_at_wall - now : 0;
            else
                v = st.reauthorize ? 1 : 0;
            emit(o, P "%s{account=\"%s\"} %" PRId64 "\n", defs[d].name,
                 metrics_escape(a, sizeof(a), m->cfg->accounts[i].name), v);
        }
    }
}

static void render_auth(const struct metrics *m, struct out *o)
{
    char d[200];
    head(o, "auth_failures_total", "counter",
         "Failed device logins, by the device the username belongs to (unknown: no such "
         "username).");
    for (size_t i = 0; i < m->cfg->ndevices; i++)
        if (m->cfg->devices[i].username)
            emit(o, P "auth_failures_total{device=\"%s\"} %lu\n",
                 metrics_escape(d, sizeof(d), m->cfg->devices[i].name), m->auth_failures[i]);
    emit(o, P "auth_failures_total{device=\"unknown\"} %lu\n", m->auth_failures[m->cfg->ndevices]);
}

static void render_refused(const struct metrics *m, struct out *o)
{
    head(o, "connections_refused_total", "counter",
         "Device connections refused at once with 421, by reason (per_ip: "
         "max_connections_per_ip; auth_blocked: the address failed auth_fail_limit logins; "
         "max_connections: the daemon is full).");
    for (size_t i = 0; i < METRICS_NREFUSALS; i++)
        emit(o, P "connections_refused_total{reason=\"%s\"} %lu\n", metrics_refusal_names[i],
             m->refused[i]);
}

static void render_device_limits(const struct metrics *m, struct out *o)
{
    char d[200];
    head(
        o, "device_limit_refusals_total", "counter",
        "MAIL or RCPT of a device refused by its limits (docs/device-limits.md): "
        "max_messages_per_hour and max_recipients_per_day with 450 4.7.1, blocked with 550 5.7.1.");
    for (size_t i = 0; i < m->cfg->ndevices; i++)
        for (size_t k = 0; k < METRICS_NDEVICE_LIMITS; k++)
            emit(o, P "device_limit_refusals_total{device=\"%s\",limit=\"%s\"} %lu\n",
                 metrics_escape(d, sizeof(d), m->cfg->devices[i].name),
                 metrics_device_limit_names[k], m->device_limits[i][k]);
}

/* Only when an account has upstream = graph: requests by status (the ones seen), throttled. */
static void render_graph(const struct metrics *m, struct out *o)
{
    char a[200], st[24];
    int any = 0;
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        any |= m->cfg->accounts[i].kind == UPSTREAM_KIND_GRAPH;
    if (!any)
        return;
    head(o, "graph_requests_total", "counter",
         "Microsoft Graph requests, by account and HTTP status (none: no answer; other: a status "
         "not listed).");
    for (size_t i = 0; i < m->cfg->naccounts; i++) {
        if (m->cfg->accounts[i].kind != UPSTREAM_KIND_GRAPH)
            continue;
        metrics_escape(a, sizeof(a), m->cfg->accounts[i].name);
        for (size_t k = 0; k < METRICS_GRAPH_NSTATUS; k++) {
            long s = metrics_graph_statuses[k];
            /* 202 always (the success series exists from the start), the others once seen */
            if (s != 202 && m->accounts[i].graph_requests[k] == 0)
                continue;
            if (s == 0)
                snprintf(st, sizeof(st), "none");
            else if (s < 0)
                snprintf(st, sizeof(st), "other");
            else
                snprintf(st, sizeof(st), "%ld", s);
            emit(o, P "graph_requests_total{account=\"%s\",status=\"%s\"} %lu\n", a, st,
                 m->accounts[i].graph_requests[k]);
        }
    }
    head(o, "graph_throttled_total", "counter",
         "Microsoft Graph answers 429 or 503 (the account's requests wait for Retry-After), by "
         "account.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        if (m->cfg->accounts[i].kind == UPSTREAM_KIND_GRAPH)
            emit(o, P "graph_throttled_total{account=\"%s\"} %lu\n",
                 metrics_escape(a, sizeof(a), m->cfg->accounts[i].name),
                 m->accounts[i].graph_throttled);
}

int metrics_render(const struct metrics *m, struct evbuffer *out, metrics_token_stats_fn stats,
                   void *arg, int64_t now_wall)
{
    struct out o = {.buf = out};
    render_sessions(m, &o);
    render_messages(m, &o);
    render_replies(m, &o);
    render_tokens(m, &o, stats, arg, now_wall);
    render_auth(m, &o);
    render_refused(m, &o);
    render_device_limits(m, &o);
    render_graph(m, &o);
    return o.failed ? -1 : 0;
}

int metrics_render_queue(struct evbuffer *out, const struct queue_stats *st, int64_t now_wall)
{
    struct out o = {.buf = out};
    if (!st)
        return 0;
    head(&o, "queue_messages", "gauge",
         "Messages in the spool waiting for delivery (held included).");
    emit(&o, P "queue_messages %zu\n", st->messages);
    head(&o, "queue_held", "gauge", "Queued messages held by an admin (queue hold).");
    emit(&o, P "queue_held %zu\n", st->held);
    head(&o, "queue_oldest_age_seconds", "gauge",
         "Age of the oldest queued message (0: the queue is empty).");
    emit(&o, P "queue_oldest_age_seconds %" PRId64 "\n",
         st->oldest_created && now_wall > st->oldest_created ? now_wall - st->oldest_created : 0);
    head(&o, "queue_delivered_total", "counter",
         "Queued messages the upstream accepted (for some or all recipients).");
    emit(&o, P "queue_delivered_total %lu\n", st->delivered);
    head(&o, "queue_deferred_total", "counter",
         "Delivery attempts from the queue that failed temporarily (a retry was scheduled).");
    emit(&o, P "queue_deferred_total %lu\n", st->deferred);
    head(&o, "queue_bounced_total", "counter",
         "Bounces (delivery status notifications) queued for refused or expired messages.");
    emit(&o, P "queue_bounced_total %lu\n", st->bounced);
    return o.failed ? -1 : 0;
}

int metrics_render_budget(const struct metrics *m, struct evbuffer *out,
                          const struct account_budget *b, int64_t now_wall)
{
    struct out o = {.buf = out};
    char a[200];
    if (!b)
        return 0;
    head(&o, "account_recipients_24h", "gauge",
         "Recipients the upstream accepted in the last 24 hours, by account (the daily "
         "recipient budget used).");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(&o, P "account_recipients_24h{account=\"%s\"} %" PRIu64 "\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name),
             account_budget_used(b, m->cfg->accounts[i].name, now_wall));
    head(&o, "account_recipient_limit", "gauge",
         "The account's daily_recipient_limit (0: none); messages are held from 95 % of it.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(&o, P "account_recipient_limit{account=\"%s\"} %u\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name),
             m->cfg->accounts[i].daily_recipient_limit);
    head(&o, "account_budget_held_total", "counter",
         "Messages held (queued, or 451 with delivery = direct) because the account's daily "
         "recipient budget was used.");
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        emit(&o, P "account_budget_held_total{account=\"%s\"} %lu\n",
             metrics_escape(a, sizeof(a), m->cfg->accounts[i].name),
             account_budget_held(b, m->cfg->accounts[i].name));
    return o.failed ? -1 : 0;
}
