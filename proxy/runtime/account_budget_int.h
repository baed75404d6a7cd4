/* Inside the account budget: shared by account_budget.c and account_budget_file.c. */
#ifndef SOP_ACCOUNT_BUDGET_INT_H
#define SOP_ACCOUNT_BUDGET_INT_H

#include "proxy/runtime/account_budget.h"

/* The recipients accepted in one minute (minute: seconds since the epoch / 60). */
struct ab_bucket {
    int64_t minute;
    uint32_t count;
};

struct ab_acct {
    char *name;
    struct ab_bucket buckets[ACCOUNT_BUDGET_NBUCKETS]; /* by minute % NBUCKETS */
    unsigned long held;                                /* messages held since start */
    int holding; /* the last decision was a hold (logged once) */
};

struct account_budget {
    struct ab_acct **accts;
    size_t n, cap;
    int dirty;
};

int64_t ab_minute(int64_t now);
size_t ab_slot(int64_t minute);
/* The bucket counts at minute now_min. */
int ab_live(const struct ab_bucket *k, int64_t now_min);
struct ab_acct *ab_find(const struct account_budget *b, const char *name);
/* Found or added (NULL: out of memory, or ACCOUNT_BUDGET_MAX_ACCOUNTS reached). */
struct ab_acct *ab_get(struct account_budget *b, const char *name);
/* n more recipients in minute (within the window at now_min). */
void ab_add_minute(struct ab_acct *a, int64_t minute, uint64_t n, int64_t now_min);

#endif
