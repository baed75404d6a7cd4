/* Forward-confirmed reverse DNS: PTR of the address, then A/AAAA of that name, which must list
 * the address. evdns hands over the first PTR name only, so that is the name checked. A lookup
 * whose caller has gone (cancelled, or the wait bound passed) stays allocated, detached, until
 * evdns calls back (with DNS_ERR_CANCEL when we cancelled it), so no callback ever sees freed
 * memory. */
#include "proxy/delivery/fcrdns.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/sockaddr_text.h"

struct fcrdns_lookup {
    struct evdns_base *dns;
    struct event *timer;
    struct evdns_request *req; /* in flight, or NULL */
    int family;                /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    char ip[INET6_ADDRSTRLEN];
    char name[256]; /* the PTR name being confirmed */
    uint32_t ttl;   /* the smallest TTL seen so far */
    fcrdns_cb cb;   /* NULL: detached, freed when req calls back */
    void *arg;
    char log_id[32];
};

struct fcrdns_cache_entry {
    int family; /* 0: free */
    unsigned char addr[16];
    int ok;
    time_t expires; /* CLOCK_MONOTONIC seconds */
};

/* One table for the process: lookups run on the loop's thread only. */
static struct fcrdns_cache_entry fcrdns_cache[FCRDNS_CACHE_MAX];

static time_t fcrdns_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static size_t fcrdns_addr_len(int family)
{
    return family == AF_INET ? 4 : 16;
}

static int fcrdns_cache_get(int family, const unsigned char *addr)
{
    time_t now = fcrdns_now();
    for (size_t i = 0; i < FCRDNS_CACHE_MAX; i++) {
        const struct fcrdns_cache_entry *e = &fcrdns_cache[i];
        if (e->family == family && e->expires > now &&
            memcmp(e->addr, addr, fcrdns_addr_len(family)) == 0)
            return e->ok;
    }
    return -1;
}

static void fcrdns_cache_put(int family, const unsigned char *addr, int ok, uint32_t ttl)
{
    time_t now = fcrdns_now();
    struct fcrdns_cache_entry *slot = NULL;
    if (ttl == 0)
        return;
    if (ttl > FCRDNS_TTL_MAX)
        ttl = FCRDNS_TTL_MAX;
    /* the same address, else a free or expired entry, else the one that expires first */
    for (size_t i = 0; i < FCRDNS_CACHE_MAX; i++) {
        struct fcrdns_cache_entry *e = &fcrdns_cache[i];
        if (e->family == family && memcmp(e->addr, addr, fcrdns_addr_len(family)) == 0) {
            slot = e;
            break;
        }
        if (e->family == 0 || e->expires <= now) {
            if (!slot || (slot->family != 0 && slot->expires > now))
                slot = e;
        } else if (!slot ||
                   (slot->family != 0 && slot->expires > now && e->expires < slot->expires)) {
            slot = e;
        }
    }
    memset(slot, 0, sizeof(*slot));
    slot->family = family;
    memcpy(slot->addr, addr, fcrdns_addr_len(family));
    slot->ok = ok;
    slot->expires = now + (time_t)ttl;
}

static void fcrdns_free(struct fcrdns_lookup *l)
{
    if (l->timer)
        event_free(l->timer);
    free(l);
}

/* The verdict: cached, logged, told; l is gone afterwards. */
static void fcrdns_finish(struct fcrdns_lookup *l, int ok, uint32_t ttl, const char *why)
{
    fcrdns_cb cb = l->cb;
    void *arg = l->arg;
    fcrdns_cache_put(l->family, l->addr, ok, ok ? ttl : (ttl ? ttl : FCRDNS_NEGATIVE_TTL));
    if (ok)
        log_info("event=fcrdns session=%s ip=%s name=%s result=pass", l->log_id, l->ip, l->name);
    else
        log_info("event=fcrdns session=%s ip=%s name=%s result=fail reason=\"%s\"", l->log_id,
                 l->ip, l->name[0] ? l->name : "-", why);
    fcrdns_free(l);
    if (cb)
        cb(arg, ok);
}

static uint32_t fcrdns_min_ttl(uint32_t a, int b)
{
    uint32_t bb = b < 0 ? 0 : (uint32_t)b;
    return bb < a ? bb : a;
}

static void fcrdns_on_forward(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct fcrdns_lookup *l = arg;
    l->req = NULL;
    if (!l->cb) {
        fcrdns_free(l);
        return;
    }
    l->ttl = fcrdns_min_ttl(l->ttl, ttl);
    int want = l->family == AF_INET ? DNS_IPv4_A : DNS_IPv6_AAAA;
    if (result != DNS_ERR_NONE || type != want || count <= 0 || !addresses) {
        fcrdns_finish(l, 0, 0, "the PTR name does not resolve");
        return;
    }
    size_t alen = fcrdns_addr_len(l->family);
    for (int i = 0; i < count; i++)
        if (memcmp((const unsigned char *)addresses + (size_t)i * alen, l->addr, alen) == 0) {
            fcrdns_finish(l, 1, l->ttl, NULL);
            return;
        }
    fcrdns_finish(l, 0, l->ttl, "the PTR name resolves elsewhere");
}

static void fcrdns_on_ptr(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct fcrdns_lookup *l = arg;
    l->req = NULL;
    if (!l->cb) {
        fcrdns_free(l);
        return;
    }
    const char *const *names = addresses;
    if (result != DNS_ERR_NONE || type != DNS_PTR || count <= 0 || !names || !names[0]) {
        fcrdns_finish(l, 0, 0, "no PTR record");
        return;
    }
    size_t n = strlen(names[0]);
    if (n == 0 || n >= sizeof(l->name)) {
        fcrdns_finish(l, 0, 0, "unusable PTR name");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)names[0][i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"') {
            fcrdns_finish(l, 0, 0, "unusable PTR name");
            return;
        }
    }
    memcpy(l->name, names[0], n + 1);
    l->ttl = fcrdns_min_ttl(l->ttl, ttl);
    if (l->family == AF_INET)
        l->req =
            evdns_base_resolve_ipv4(l->dns, l->name, DNS_QUERY_NO_SEARCH, fcrdns_on_forward, l);
    else
        l->req =
            evdns_base_resolve_ipv6(l->dns, l->name, DNS_QUERY_NO_SEARCH, fcrdns_on_forward, l);
    if (!l->req)
        fcrdns_finish(l, 0, 0, "cannot start the forward lookup");
}

static void fcrdns_detach(struct fcrdns_lookup *l)
{
    l->cb = NULL;
    if (l->timer) {
        event_free(l->timer);
        l->timer = NULL;
    }
    if (l->req)
        evdns_cancel_request(l->dns, l->req); /* calls back (DNS_ERR_CANCEL): freed there */
    else
        free(l);
}

static void fcrdns_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct fcrdns_lookup *l = arg;
    fcrdns_cb cb = l->cb;
    void *cb_arg = l->arg;
    (void)fd;
    (void)what;
    log_warn("event=fcrdns session=%s ip=%s result=fail reason=\"no answer in time\"", l->log_id,
             l->ip);
    fcrdns_detach(l); /* not cached: the next session asks again */
    cb(cb_arg, 0);
}

int fcrdns_check(struct evdns_base *dns, struct event_base *base, const struct sockaddr *peer,
                 unsigned wait_s, const char *log_id, fcrdns_cb cb, void *arg,
                 struct fcrdns_lookup **out)
{
    int family;
    unsigned char addr[16];
    *out = NULL;
    if (peer->sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)peer)->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(addr, a6->s6_addr + 12, 4);
        } else {
            family = AF_INET6;
            memcpy(addr, a6->s6_addr, 16);
        }
    } else {
        return 0;
    }
    int cached = fcrdns_cache_get(family, addr);
    if (cached >= 0)
        return cached;
    struct fcrdns_lookup *l = calloc(1, sizeof(*l));
    if (!l)
        return 0;
    l->dns = dns;
    l->family = family;
    memcpy(l->addr, addr, sizeof(addr));
    (void)sockaddr_text_bytes(family, addr, l->ip, sizeof(l->ip));
    l->ttl = FCRDNS_TTL_MAX;
    l->cb = cb;
    l->arg = arg;
    snprintf(l->log_id, sizeof(l->log_id), "%s", log_id);
    struct timeval tv = {.tv_sec = (time_t)wait_s};
    l->timer = evtimer_new(base, fcrdns_on_timeout, l);
    if (!l->timer || evtimer_add(l->timer, &tv) != 0) {
        fcrdns_free(l);
        return 0;
    }
    if (family == AF_INET)
        l->req = evdns_base_resolve_reverse(dns, (const struct in_addr *)addr, 0, fcrdns_on_ptr, l);
    else
        l->req = evdns_base_resolve_reverse_ipv6(dns, (const struct in6_addr *)addr, 0,
                                                 fcrdns_on_ptr, l);
    if (!l->req) {
        log_warn("event=fcrdns session=%s ip=%s result=fail reason=\"cannot start the lookup\"",
                 log_id, l->ip);
        fcrdns_free(l);
        return 0;
    }
    *out = l;
    return -1;
}

void fcrdns_cancel(struct fcrdns_lookup *l)
{
    if (l)
        fcrdns_detach(l);
}
