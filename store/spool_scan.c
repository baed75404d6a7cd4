/* Startup recovery: what a crash (or kill -9, or a full disk) can have left, and what to do:
 *   tmp/ANYTHING                  a write that never committed (the device never heard 250):
 *                                 removed
 *   queue/ID.body without ID.env  a commit cut between its two renames, or a removal cut between
 *                                 its two unlinks: never committed or already delivered: removed
 *   queue/ID.env that does not parse, or whose body is missing, short or not its own
 *                                 might be a message the device heard 250 for: moved with its body
 *                                 to corrupt/ and reported, never deleted
 *   anything else in queue/       not ours: moved to corrupt/ and reported
 * Must run before any writer exists: a writer's body is in queue/ for a moment before its
 * envelope, and its temp files are in tmp/. */
#include "store/spool_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define SPOOL_QUARANTINE_TRIES 100

struct spool_names {
    char **v;
    size_t n, cap;
};

static void spool_names_free(struct spool_names *ns)
{
    size_t i;
    for (i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    memset(ns, 0, sizeof(*ns));
}

/* Every entry of dir except . and .., read before anything in it changes. 0 ok, -1 with err. */
static int spool_names_read(const char *dir, struct spool_names *ns, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    memset(ns, 0, sizeof(*ns));
    if (!d) {
        snprintf(err, errlen, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (ns->n == ns->cap) {
            size_t ncap = ns->cap ? ns->cap * 2 : 64;
            char **nv = realloc(ns->v, ncap * sizeof(*nv));
            if (!nv)
                goto oom;
            ns->v = nv;
            ns->cap = ncap;
        }
        ns->v[ns->n] = strdup(de->d_name);
        if (!ns->v[ns->n])
            goto oom;
        ns->n++;
    }
    closedir(d);
    return 0;
oom:
    closedir(d);
    spool_names_free(ns);
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* "ID.ext" with a valid id: 1 and the id in id; else 0. */
static int spool_name_is(const char *name, const char *ext, char id[SPOOL_ID_LEN + 1])
{
    size_t el = strlen(ext);
    if (strlen(name) != SPOOL_ID_LEN + el || strcmp(name + SPOOL_ID_LEN, ext) != 0)
        return 0;
    memcpy(id, name, SPOOL_ID_LEN);
    id[SPOOL_ID_LEN] = '\0';
    return spool_id_valid(id);
}

/* Move queue/NAME to corrupt/NAME (or NAME.N if taken). 0 ok or already gone, -1 failed. */
static int spool_quarantine_file(struct spool *s, const char *name)
{
    char from[PATH_MAX + 300], to[PATH_MAX + 320], safe[300];
    struct stat st;
    int i, n;
    n = snprintf(from, sizeof(from), "%s/%s", s->queue, name);
    if (n < 0 || (size_t)n >= sizeof(from))
        return -1;
    if (lstat(from, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    for (i = 0; i < SPOOL_QUARANTINE_TRIES; i++) {
        n = i ? snprintf(to, sizeof(to), "%s/%s.%d", s->corrupt, name, i)
              : snprintf(to, sizeof(to), "%s/%s", s->corrupt, name);
        if (n < 0 || (size_t)n >= sizeof(to))
            return -1;
        if (lstat(to, &st) != 0 && errno == ENOENT)
            break;
    }
    if (i == SPOOL_QUARANTINE_TRIES || rename(from, to) != 0) {
        log_error("event=spool_quarantine_failed file=%s/%s error=\"%s\"", s->queue,
                  log_safe(safe, sizeof(safe), name, strlen(name)), strerror(errno));
        return -1;
    }
    return 0;
}

static void spool_quarantine(struct spool *s, const char *id, const char *reason,
                             struct spool_scan_stats *st)
{
    char envn[SPOOL_ID_LEN + 8], bodyn[SPOOL_ID_LEN + 8], safe[600];
    snprintf(envn, sizeof(envn), "%s.env", id);
    snprintf(bodyn, sizeof(bodyn), "%s.body", id);
    spool_quarantine_file(s, envn);
    spool_quarantine_file(s, bodyn);
    st->quarantined++;
    log_error("event=spool_quarantined queue_id=%s reason=%s moved_to=%s "
              "effect=\"not delivered; inspect the files by hand\"",
              id, log_safe(safe, sizeof(safe), reason, strlen(reason)), s->corrupt);
}

static int spool_env_cmp(const void *a, const void *b)
{
    const struct spool_envelope *x = a, *y = b;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->queue_id, y->queue_id);
}

static void spool_scan_tmp(struct spool *s, struct spool_scan_stats *st)
{
    struct spool_names ns;
    char path[PATH_MAX + 300], safe[300], err[64];
    size_t i;
    if (spool_names_read(s->tmp, &ns, err, sizeof(err)) != 0) {
        log_warn("event=spool_tmp_unreadable dir=%s error=\"%s\"", s->tmp, err);
        return;
    }
    for (i = 0; i < ns.n; i++) {
        int n = snprintf(path, sizeof(path), "%s/%s", s->tmp, ns.v[i]);
        if (n < 0 || (size_t)n >= sizeof(path) || unlink(path) != 0)
            continue;
        st->tmp_removed++;
        log_info("event=spool_tmp_removed file=%s reason=\"never committed\"",
                 log_safe(safe, sizeof(safe), ns.v[i], strlen(ns.v[i])));
    }
    spool_names_free(&ns);
}

/* One queue/ID.env: 1 committed (appended to *list), 0 quarantined, -1 out of memory. */
static int spool_scan_env(struct spool *s, const char *id, struct spool_envelope **list, size_t *n,
                          size_t *cap, struct spool_scan_stats *st)
{
    char err[PATH_MAX + 200];
    struct spool_envelope env;
    struct spool_body *b;
    int r = spool_load_envelope(s, id, &env, err, sizeof(err));
    if (r == 0)
        return 0; /* gone meanwhile */
    if (r < 0) {
        spool_quarantine(s, id, err, st);
        return 0;
    }
    b = spool_body_open(s, &env, err, sizeof(err));
    if (!b) {
        spool_envelope_clear(&env);
        spool_quarantine(s, id, err, st);
        return 0;
    }
    spool_body_free(b);
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct spool_envelope *nl = realloc(*list, ncap * sizeof(*nl));
        if (!nl) {
            spool_envelope_clear(&env);
            return -1;
        }
        *list = nl;
        *cap = ncap;
    }
    (*list)[(*n)++] = env;
    return 1;
}

int spool_scan(struct spool *s, struct spool_envelope **list, size_t *n,
               struct spool_scan_stats *stats, char *err, size_t errlen)
{
    struct spool_scan_stats st = {0, 0, 0, 0};
    struct spool_envelope *out = NULL;
    struct spool_names ns;
    size_t nout = 0, cap = 0, i;
    char id[SPOOL_ID_LEN + 1], path[PATH_MAX + 32], safe[300];
    struct stat sb;

    spool_scan_tmp(s, &st);
    if (spool_names_read(s->queue, &ns, err, errlen) != 0)
        return -1;
    for (i = 0; i < ns.n; i++) {
        const char *name = ns.v[i];
        if (spool_name_is(name, ".env", id)) {
            if (spool_scan_env(s, id, &out, &nout, &cap, &st) < 0) {
                snprintf(err, errlen, "out of memory");
                spool_list_free(out, nout);
                spool_names_free(&ns);
                return -1;
            }
        } else if (spool_name_is(name, ".body", id)) {
            if (spool_env_path(s, id, path, sizeof(path)) && lstat(path, &sb) == 0)
                continue; /* its envelope is handled under its own name */
            if (spool_body_path(s, id, path, sizeof(path)) && unlink(path) == 0) {
                st.orphans++;
                log_info("event=spool_orphan_removed queue_id=%s "
                         "reason=\"body without envelope: never committed, or delivered\"",
                         id);
            }
        } else {
            if (spool_quarantine_file(s, name) == 0) {
                st.quarantined++;
                log_error("event=spool_quarantined file=%s reason=\"unknown file in the queue\" "
                          "moved_to=%s",
                          log_safe(safe, sizeof(safe), name, strlen(name)), s->corrupt);
            }
        }
    }
    spool_names_free(&ns);
    if (st.quarantined || st.orphans) {
        char ferr[PATH_MAX + 64];
        if (spool_fsync_dir(s, s->queue, ferr, sizeof(ferr)) != 0 ||
            spool_fsync_dir(s, s->corrupt, ferr, sizeof(ferr)) != 0)
            log_warn("event=spool_fsync_failed error=\"%s\"", ferr);
    }
    if (nout > 1)
        qsort(out, nout, sizeof(*out), spool_env_cmp);
    st.committed = nout;
    log_info("event=spool_scanned queued=%zu tmp_removed=%zu orphans_removed=%zu quarantined=%zu",
             st.committed, st.tmp_removed, st.orphans, st.quarantined);
    *list = out;
    *n = nout;
    if (stats)
        *stats = st;
    return 0;
}

void spool_list_free(struct spool_envelope *list, size_t n)
{
    size_t i;
    for (i = 0; list && i < n; i++)
        spool_envelope_clear(&list[i]);
    free(list);
}
