/* Counting: the daemon calls these at its counting points; rendering is metrics_render.c. */
#include "proxy/runtime/metrics_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"

const char *const metrics_cmd_names[METRICS_NCMDS] = {"AUTH", "MAIL", "RCPT", "DATA"};
const char *const metrics_result_names[METRICS_NRESULTS] = {"delivered", "refused", "deferred",
                                                            "queued"};

struct metrics *metrics_new(const struct config *cfg)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cfg = cfg;
    m->accounts = calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*m->accounts));
    m->auth_failures = calloc(cfg->ndevices + 1, sizeof(*m->auth_failures));
    m->device_limits = calloc(cfg->ndevices + 1, sizeof(*m->device_limits));
    if (!m->accounts || !m->auth_failures || !m->device_limits) {
        metrics_free(m);
        return NULL;
    }
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    free(m->accounts);
    free(m->auth_failures);
    free(m->device_limits);
    free(m);
}

int metrics_reconfigure(struct metrics *m, const struct config *cfg)
{
    if (!m)
        return 0;
    struct metrics_account *accounts =
        calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*accounts));
    unsigned long *auth_failures = calloc(cfg->ndevices + 1, sizeof(*auth_failures));
    unsigned long(*device_limits)[METRICS_NDEVICE_LIMITS] =
        calloc(cfg->ndevices + 1, sizeof(*device_limits));
    if (!accounts || !auth_failures || !device_limits) {
        free(accounts);
        free(auth_failures);
        free(device_limits);
        return -1;
    }
    for (size_t i = 0; i < cfg->naccounts; i++)
        for (size_t j = 0; j < m->cfg->naccounts; j++)
            if (strcmp(cfg->accounts[i].name, m->cfg->accounts[j].name) == 0)
                accounts[i] = m->accounts[j];
    for (size_t i = 0; i < cfg->ndevices; i++)
        for (size_t j = 0; j < m->cfg->ndevices; j++)
            if (strcmp(cfg->devices[i].name, m->cfg->devices[j].name) == 0) {
                auth_failures[i] = m->auth_failures[j];
                memcpy(device_limits[i], m->device_limits[j], sizeof(device_limits[i]));
            }
    auth_failures[cfg->ndevices] = m->auth_failures[m->cfg->ndevices];
    free(m->accounts);
    free(m->auth_failures);
    free(m->device_limits);
    m->accounts = accounts;
    m->auth_failures = auth_failures;
    m->device_limits = device_limits;
    m->cfg = cfg;
    return 0;
}

static int listener_slot(struct metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nlisteners; i++)
        if (strcmp(m->listeners[i].name, name) == 0)
            return (int)i;
    if (m->nlisteners == METRICS_LISTENERS_MAX)
        return -1;
    struct metrics_listener *l = &m->listeners[m->nlisteners];
    snprintf(l->name, sizeof(l->name), "%s", name);
    return (int)m->nlisteners++;
}

void metrics_listener_add(struct metrics *m, const char *listener)
{
    if (m)
        (void)listener_slot(m, listener);
}

int metrics_session_opened(struct metrics *m, const char *listener)
{
    if (!m)
        return -1;
    int slot = listener_slot(m, listener);
    if (slot >= 0) {
        m->listeners[slot].open++;
        m->listeners[slot].total++;
    }
    return slot;
}

void metrics_session_closed(struct metrics *m, int slot)
{
    if (!m || slot < 0 || (size_t)slot >= m->nlisteners)
        return;
    if (m->listeners[slot].open)
        m->listeners[slot].open--;
}

/* acct's counters (NULL: not in the current config). */
static struct metrics_account *account_of(struct metrics *m, const struct cfg_account *acct)
{
    /* pointers compared for equality only: acct may come from an earlier config */
    for (size_t i = 0; i < m->cfg->naccounts; i++)
        if (&m->cfg->accounts[i] == acct || strcmp(m->cfg->accounts[i].name, acct->name) == 0)
            return &m->accounts[i];
    return NULL;
}

void metrics_message(struct metrics *m, const struct cfg_account *acct, enum metrics_result r,
                     uint64_t bytes)
{
    if (!m || !acct || (unsigned)r >= METRICS_NRESULTS)
        return;
    struct metrics_account *a = account_of(m, acct);
    if (!a)
        return;
    a->messages[r]++;
    a->bytes += bytes;
}

void metrics_upstream_conn(struct metrics *m, const struct cfg_account *acct, int reused)
{
    struct metrics_account *a = m && acct ? account_of(m, acct) : NULL;
    if (!a)
        return;
    if (reused)
        a->conns_reused++;
    else
        a->conns_opened++;
}

/* none (no answer), then the statuses Graph gives, then other (-1) */
const long metrics_graph_statuses[METRICS_GRAPH_NSTATUS] = {
    0, 200, 201, 202, 204, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504, -1};

void metrics_graph_request(struct metrics *m, const struct cfg_account *acct, long status)
{
    struct metrics_account *a = m && acct ? account_of(m, acct) : NULL;
    size_t i = 0;
    if (!a)
        return;
    while (i + 1 < METRICS_GRAPH_NSTATUS && metrics_graph_statuses[i] != status)
        i++;
    a->graph_requests[i]++;
    if (status == 429 || status == 503)
        a->graph_throttled++;
}

/* "x.y.z" with x the reply's class, y one digit (RFC 3463 defines subjects 0-7) and z at most
 * three: written back in canonical form ("5.7.03" and "5.7.3" are one series). 0 ok, -1 not. */
static int enhanced_canonical(int klass, const char *e, char *out, size_t outlen)
{
    unsigned v[3] = {0, 0, 0};
    const unsigned maxdigits[3] = {1, 1, 3};
    const char *p = e;
    for (int part = 0; part < 3; part++) {
        unsigned n = 0;
        while (p[n] >= '0' && p[n] <= '9') {
            if (n == maxdigits[part])
                return -1;
            v[part] = v[part] * 10 + (unsigned)(p[n] - '0');
            n++;
        }
        if (n == 0)
            return -1;
        p += n;
        if (part < 2) {
            if (*p != '.')
                return -1;
            p++;
        }
    }
    if (*p != '\0' || v[0] != (unsigned)klass)
        return -1;
    snprintf(out, outlen, "%u.%u.%u", v[0], v[1], v[2]);
    return 0;
}

void metrics_upstream_reply(struct metrics *m, enum metrics_cmd cmd, int code, const char *enhanced)
{
    if (!m || (unsigned)cmd >= METRICS_NCMDS)
        return;
    int klass = code >= 200 && code <= 599 ? code / 100 : 0;
    char canon[8];
    if (klass == 0 || !enhanced || enhanced_canonical(klass, enhanced, canon, sizeof(canon)) != 0)
        snprintf(canon, sizeof(canon), "other");
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < m->nreplies; i++) {
            struct metrics_reply *r = &m->replies[i];
            if (r->cmd == cmd && r->klass == klass && strcmp(r->code, canon) == 0) {
                r->count++;
                return;
            }
        }
        int coded = strcmp(canon, "other") != 0;
        if (!coded || m->nreplies_coded < METRICS_REPLIES_MAX) {
            struct metrics_reply *r = &m->replies[m->nreplies++];
            r->cmd = cmd;
            r->klass = klass;
            snprintf(r->code, sizeof(r->code), "%s", canon);
            r->count = 1;
            if (coded)
                m->nreplies_coded++;
            return;
        }
        /* the table is full: count it with the others of its command and class */
        snprintf(canon, sizeof(canon), "other");
    }
}

int metrics_device_by_user(const struct metrics *m, const char *user)
{
    if (!m || !user)
        return -1;
    for (size_t i = 0; i < m->cfg->ndevices; i++)
        if (m->cfg->devices[i].username && strcmp(m->cfg->devices[i].username, user) == 0)
            return (int)i;
    return -1;
}

void metrics_auth_failed(struct metrics *m, int device)
{
    if (!m)
        return;
    size_t i = device >= 0 && (size_t)device < m->cfg->ndevices ? (size_t)device : m->cfg->ndevices;
    m->auth_failures[i]++;
}

const char *const metrics_refusal_names[METRICS_NREFUSALS] = {"per_ip", "auth_blocked",
                                                              "max_connections"};

void metrics_connection_refused(struct metrics *m, enum metrics_refusal why)
{
    if (m && (unsigned)why < METRICS_NREFUSALS)
        m->refused[why]++;
}

const char *const metrics_device_limit_names[METRICS_NDEVICE_LIMITS] = {
    "max_messages_per_hour", "max_recipients_per_day", "blocked"};

void metrics_device_limit(struct metrics *m, const char *device, enum metrics_device_limit why)
{
    if (!m || !device || (unsigned)why >= METRICS_NDEVICE_LIMITS)
        return;
    for (size_t i = 0; i < m->cfg->ndevices; i++)
        if (strcmp(m->cfg->devices[i].name, device) == 0) {
            m->device_limits[i][why]++;
            return;
        }
}
