/* Counting each account's accepted recipients in a rolling 24 hours, and the hold decision. */
#include "proxy/runtime/account_budget_int.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/log.h"

struct account_budget *account_budget_new(void)
{
    return calloc(1, sizeof(struct account_budget));
}

void account_budget_free(struct account_budget *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->accts[i]->name);
        free(b->accts[i]);
    }
    free(b->accts);
    free(b);
}

int64_t ab_minute(int64_t now)
{
    return now >= 0 ? now / ACCOUNT_BUDGET_BUCKET
                    : (now - ACCOUNT_BUDGET_BUCKET + 1) / ACCOUNT_BUDGET_BUCKET;
}

size_t ab_slot(int64_t minute)
{
    int64_t s = minute % ACCOUNT_BUDGET_NBUCKETS;
    return (size_t)(s < 0 ? s + ACCOUNT_BUDGET_NBUCKETS : s);
}

int ab_live(const struct ab_bucket *k, int64_t now_min)
{
    return k->count && k->minute <= now_min && now_min - k->minute < ACCOUNT_BUDGET_NBUCKETS;
}

struct ab_acct *ab_find(const struct account_budget *b, const char *name)
{
    for (size_t i = 0; b && name && i < b->n; i++)
        if (strcmp(b->accts[i]->name, name) == 0)
            return b->accts[i];
    return NULL;
}

struct ab_acct *ab_get(struct account_budget *b, const char *name)
{
    struct ab_acct *a = ab_find(b, name);
    if (a || !b || !name)
        return a;
    if (b->n >= ACCOUNT_BUDGET_MAX_ACCOUNTS)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct ab_acct **n = realloc(b->accts, cap * sizeof(*n));
        if (!n)
            return NULL;
        b->accts = n;
        b->cap = cap;
    }
    a = calloc(1, sizeof(*a));
    if (!a || !(a->name = strdup(name))) {
        free(a);
        return NULL;
    }
    b->accts[b->n++] = a;
    return a;
}

void ab_add_minute(struct ab_acct *a, int64_t minute, uint64_t n, int64_t now_min)
{
    struct ab_bucket *k = &a->buckets[ab_slot(minute)];
    if (!ab_live(k, now_min) || k->minute != minute) {
        k->minute = minute;
        k->count = 0;
    }
    k->count = k->count + n > ACCOUNT_BUDGET_COUNT_MAX ? ACCOUNT_BUDGET_COUNT_MAX
                                                       : (uint32_t)(k->count + n);
}

uint64_t account_budget_mark(unsigned limit)
{
    return (uint64_t)limit - (uint64_t)limit * ACCOUNT_BUDGET_RESERVE_PERCENT / 100;
}

void account_budget_add(struct account_budget *b, const char *account, size_t n, int64_t now)
{
    if (!b || !n)
        return;
    struct ab_acct *a = ab_get(b, account);
    if (!a) {
        log_warn("event=account_budget_untracked account=%s reason=\"out of memory or too many "
                 "accounts\"",
                 account);
        return;
    }
    ab_add_minute(a, ab_minute(now), n, ab_minute(now));
    b->dirty = 1;
}

static uint64_t acct_used(const struct ab_acct *a, int64_t now_min)
{
    uint64_t sum = 0;
    for (size_t i = 0; a && i < ACCOUNT_BUDGET_NBUCKETS; i++)
        if (ab_live(&a->buckets[i], now_min))
            sum += a->buckets[i].count;
    return sum;
}

uint64_t account_budget_used(const struct account_budget *b, const char *account, int64_t now)
{
    return acct_used(ab_find(b, account), ab_minute(now));
}

/* When used + n fits under mark (or, n above mark, when nothing is counted), walking the
 * buckets oldest first. */
static int64_t room_at(const struct ab_acct *a, uint64_t used, uint64_t n, uint64_t mark,
                       int64_t now_min)
{
    uint64_t left = used;
    for (int64_t m = now_min - ACCOUNT_BUDGET_NBUCKETS + 1; m <= now_min; m++) {
        const struct ab_bucket *k = &a->buckets[ab_slot(m)];
        if (!ab_live(k, now_min) || k->minute != m)
            continue;
        left -= k->count;
        if (left == 0 || (n <= mark && left + n <= mark))
            return (m + ACCOUNT_BUDGET_NBUCKETS) * ACCOUNT_BUDGET_BUCKET;
    }
    return (now_min + 1) * ACCOUNT_BUDGET_BUCKET; /* not reached: used counts these buckets */
}

int account_budget_admit(struct account_budget *b, const char *account, unsigned limit, size_t n,
                         int64_t now, int64_t *room)
{
    if (!b || !limit)
        return 1;
    struct ab_acct *a = ab_get(b, account);
    int64_t now_min = ab_minute(now);
    uint64_t used = acct_used(a, now_min), mark = account_budget_mark(limit);
    int ok = used + n <= mark || used == 0;
    if (!a) /* not tracked (out of memory): nothing is counted either */
        return 1;
    if (ok) {
        if (a->holding)
            log_info("event=account_budget_resume account=%s used=%llu limit=%u", account,
                     (unsigned long long)used, limit);
        a->holding = 0;
        return 1;
    }
    int64_t at = room_at(a, used, n, mark, now_min);
    if (room)
        *room = at;
    if (!a->holding)
        log_warn("event=account_budget_hold account=%s used=%llu limit=%u mark=%llu rcpts=%zu "
                 "room_in=%llds effect=\"new messages wait in the queue (delivery = direct: "
                 "451 4.7.1) until recipients of the last 24 hours age out\"",
                 account, (unsigned long long)used, limit, (unsigned long long)mark, n,
                 (long long)(at - now));
    a->holding = 1;
    return 0;
}

void account_budget_count_held(struct account_budget *b, const char *account)
{
    struct ab_acct *a = ab_get(b, account);
    if (a)
        a->held++;
}

unsigned long account_budget_held(const struct account_budget *b, const char *account)
{
    const struct ab_acct *a = ab_find(b, account);
    return a ? a->held : 0;
}

int account_budget_dirty(const struct account_budget *b)
{
    return b && b->dirty;
}

void account_budget_mark_clean(struct account_budget *b)
{
    if (b)
        b->dirty = 0;
}

int account_budget_json(struct cJSON *o, const struct account_budget *b, const char *account,
                        unsigned limit, int64_t now)
{
    if (!cJSON_AddNumberToObject(o, "recipients_24h",
                                 (double)account_budget_used(b, account, now)) ||
        !cJSON_AddNumberToObject(o, "recipient_limit", (double)limit) ||
        !cJSON_AddNumberToObject(o, "budget_held", (double)account_budget_held(b, account)))
        return -1;
    return 0;
}
