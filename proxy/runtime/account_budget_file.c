/* STATE_DIR/account-budget.state: the recipients counted in the last 24 hours, so a restart does
 * not forget the day. Text, one line per non-empty minute:
 *
 *   smtp-oauth-proxy account-budget 1
 *   ACCOUNT MINUTE COUNT          (MINUTE: seconds since the epoch / 60)
 *   ...
 *   end LINES
 *
 * The trailer tells a file cut short; anything that does not parse makes the whole file ignored
 * (never half-used). An admin may edit it while the daemon is stopped. Written through
 * common/durable_file: a temp file O_EXCL 0600, fsync, rename, fsync the directory. */
#include "proxy/runtime/account_budget_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/durable_file.h"
#include "common/log.h"
#include "common/state_file.h"
#include "proxy/config/config.h"

#define AB_HEADER "smtp-oauth-proxy account-budget 1"
/* a line is at most a name and two numbers; a file past this is not ours */
#define AB_LINE_MAX 512
#define AB_FILE_MAX (64u * 1024 * 1024)

int account_budget_path(const struct config *cfg, char *path, size_t len)
{
    int n = snprintf(path, len, "%s/%s", cfg->state_dir, ACCOUNT_BUDGET_FILE);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---- save ---- */

struct ab_buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct ab_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct ab_buf *o, const char *fmt, ...)
{
    va_list ap;
    for (int tries = 0; tries < 2 && !o->failed; tries++) {
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if (o->p && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap ? o->cap * 2 : 4096) + (size_t)n;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->failed = 1;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

char *account_budget_text(const struct account_budget *b, int64_t now, size_t *len)
{
    struct ab_buf o = {0};
    size_t lines = 0;
    int64_t now_min = ab_minute(now);

    put(&o, "%s\n", AB_HEADER);
    for (size_t i = 0; b && i < b->n; i++) {
        const struct ab_acct *a = b->accts[i];
        /* oldest first: easier to read */
        for (int64_t m = now_min - ACCOUNT_BUDGET_NBUCKETS + 1; m <= now_min; m++) {
            const struct ab_bucket *k = &a->buckets[ab_slot(m)];
            if (!ab_live(k, now_min) || k->minute != m)
                continue;
            put(&o, "%s %" PRId64 " %" PRIu32 "\n", a->name, m, k->count);
            lines++;
        }
    }
    put(&o, "end %zu\n", lines);
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}

int account_budget_save(const struct account_budget *b, const char *path, int64_t now, char *err,
                        size_t errlen)
{
    char dir[4096], tmp[4200];
    size_t len = 0;
    char *text = account_budget_text(b, now, &len);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
    if (durable_mkdir(dir, err, errlen) < 0) {
        free(text);
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    (void)unlink(tmp); /* a crash's leftover: durable_replace wants it gone */
    int r = durable_replace(tmp, path, dir, text, len, 1, NULL, err, errlen);
    free(text);
    return r;
}

/* ---- load ---- */

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int name_ok(const char *s)
{
    if (!*s || strlen(s) > 255)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._-", *s)))
            return 0;
    return 1;
}

/* Parse text into fresh (a new budget). 0 ok; -1 with err. */
static int parse(struct account_budget *fresh, char *text, int64_t now, char *err, size_t errlen)
{
    int64_t now_min = ab_minute(now);
    size_t lineno = 0, lines = 0;
    int ended = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[AB_LINE_MAX], mins[AB_LINE_MAX], counts[AB_LINE_MAX], extra[2];
        uint64_t minute, count;
        lineno++;
        if (ended) {
            snprintf(err, errlen, "line %zu: text after the end line", lineno);
            return -1;
        }
        if (strlen(line) >= AB_LINE_MAX) {
            snprintf(err, errlen, "line %zu: too long", lineno);
            return -1;
        }
        if (lineno == 1) {
            if (strcmp(line, AB_HEADER) != 0) {
                snprintf(err, errlen, "line 1: not an account-budget file (expected '%s')",
                         AB_HEADER);
                return -1;
            }
            continue;
        }
        int f = sscanf(line, "%511s %511s %511s %1s", name, mins, counts, extra);
        if (f == 2 && strcmp(name, "end") == 0) {
            uint64_t want;
            if (parse_u64(mins, &want) != 0 || want != lines) {
                snprintf(err, errlen, "line %zu: the end line says %s lines, the file has %zu",
                         lineno, mins, lines);
                return -1;
            }
            ended = 1;
            continue;
        }
        if (f != 3 || !name_ok(name) || parse_u64(mins, &minute) != 0 ||
            parse_u64(counts, &count) != 0 || minute > (uint64_t)INT64_MAX ||
            count > ACCOUNT_BUDGET_COUNT_MAX) {
            snprintf(err, errlen, "line %zu: expected 'ACCOUNT MINUTE COUNT'", lineno);
            return -1;
        }
        lines++;
        /* a minute ahead of the clock (it went back) counts as now: never forgotten early */
        int64_t m = (int64_t)minute > now_min ? now_min : (int64_t)minute;
        if (now_min - m >= ACCOUNT_BUDGET_NBUCKETS || count == 0)
            continue; /* aged out */
        struct ab_acct *a = ab_get(fresh, name);
        if (!a) {
            snprintf(err, errlen, "line %zu: too many accounts (or out of memory)", lineno);
            return -1;
        }
        ab_add_minute(a, m, count, now_min);
    }
    if (lineno == 0 || !ended) {
        snprintf(err, errlen, "no end line: the file was cut short");
        return -1;
    }
    return 0;
}

int account_budget_parse(struct account_budget *b, const char *data, size_t len, int64_t now,
                         char *err, size_t errlen)
{
    if (len > AB_FILE_MAX || memchr(data, '\0', len)) {
        snprintf(err, errlen, "too large or not text");
        return -1;
    }
    char *text = malloc(len + 1);
    struct account_budget *fresh = account_budget_new();
    if (!text || !fresh) {
        free(text);
        account_budget_free(fresh);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(text, data, len);
    text[len] = '\0';
    int r = parse(fresh, text, now, err, errlen);
    free(text);
    if (r == 0) {
        /* the file's counts replace b's, held counters and hold states aside */
        for (size_t i = 0; i < fresh->n; i++) {
            struct ab_acct *src = fresh->accts[i], *dst = ab_get(b, src->name);
            if (dst)
                memcpy(dst->buckets, src->buckets, sizeof(dst->buckets));
        }
    }
    account_budget_free(fresh);
    return r;
}

int account_budget_load(struct account_budget *b, const char *path, int64_t now, char *err,
                        size_t errlen)
{
    char perr[512];
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *text = malloc(AB_FILE_MAX + 1);
    size_t n = text ? fread(text, 1, AB_FILE_MAX + 1, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (!text || rerr) {
        snprintf(err, errlen, "%s: %s", path, !text ? "out of memory" : "read error");
        free(text);
        return -1;
    }
    int r = account_budget_parse(b, text, n, now, perr, sizeof(perr));
    free(text);
    if (r != 0) {
        snprintf(err, errlen, "%s", perr);
        return -1;
    }
    return 1;
}

/* ---- the daemon's copy ---- */

struct account_budget_keeper {
    struct account_budget *b;
    struct event *timer;
    char path[4096];
    int failing; /* the last write failed: the next success is logged */
};

static void flush(struct account_budget_keeper *k)
{
    char err[1024];
    if (!account_budget_dirty(k->b) || !k->path[0])
        return;
    if (account_budget_save(k->b, k->path, (int64_t)time(NULL), err, sizeof(err)) != 0) {
        log_warn("event=account_budget_write_failed path=%s reason=\"%s\"", k->path, err);
        k->failing = 1;
        return;
    }
    account_budget_mark_clean(k->b);
    if (k->failing)
        log_info("event=account_budget_written path=%s", k->path);
    k->failing = 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

static void set_path(struct account_budget_keeper *k, const struct config *cfg)
{
    if (account_budget_path(cfg, k->path, sizeof(k->path)) != 0) {
        log_warn("event=account_budget_state_off reason=\"state_dir too long\"");
        k->path[0] = '\0';
    }
}

struct account_budget_keeper *account_budget_keeper_new(struct event_base *base,
                                                        const struct config *cfg)
{
    char err[1024];
    int64_t now = (int64_t)time(NULL);
    struct account_budget_keeper *k = calloc(1, sizeof(*k));
    if (!k || !(k->b = account_budget_new()))
        goto fail;
    set_path(k, cfg);
    if (k->path[0]) {
        int r = account_budget_load(k->b, k->path, now, err, sizeof(err));
        if (r < 0) {
            /* start-up goes on with empty counts; the bad file is set aside for a person */
            char aside[sizeof(k->path) + 8];
            int moved = state_file_set_aside(k->path, aside, sizeof(aside));
            char safe[1200];
            log_warn("event=account_budget_state_ignored path=%s reason=%s "
                     "effect=\"the recipients of the last 24 hours count from zero\"%s%s",
                     k->path, log_safe(safe, sizeof(safe), err, strlen(err)),
                     moved ? " moved_to=" : "", moved ? aside : "");
        } else if (r > 0) {
            for (size_t i = 0; i < cfg->naccounts; i++)
                log_info("event=account_budget_loaded account=%s used=%llu limit=%u",
                         cfg->accounts[i].name,
                         (unsigned long long)account_budget_used(k->b, cfg->accounts[i].name, now),
                         cfg->accounts[i].daily_recipient_limit);
        }
    }
    struct timeval tv = {.tv_sec = ACCOUNT_BUDGET_FLUSH_SECONDS};
    k->timer = base ? event_new(base, -1, EV_PERSIST, on_tick, k) : NULL;
    if (base && (!k->timer || event_add(k->timer, &tv) != 0))
        goto fail;
    return k;
fail:
    account_budget_keeper_free(k);
    return NULL;
}

void account_budget_keeper_free(struct account_budget_keeper *k)
{
    if (!k)
        return;
    if (k->b)
        flush(k);
    if (k->timer)
        event_free(k->timer);
    account_budget_free(k->b);
    free(k);
}

struct account_budget *account_budget_keeper_budget(struct account_budget_keeper *k)
{
    return k ? k->b : NULL;
}

void account_budget_keeper_retain(struct account_budget_keeper *k, const struct config *cfg)
{
    if (k)
        set_path(k, cfg);
}
