/* The config file: libinih splits "key = value" lines and strips comments; everything else is
 * here and in the files config_int.h names. Each section has a table of keys (config_keys.c)
 * {name, setter, field, default, min, max, choices}; the setter validates and stores one value
 * (config_value.c, config_secret.c), defaults go through the same setters, and a last pass checks
 * what spans keys and sections (config_check.c). Every problem is collected with its line, so
 * --check shows them all at once. */
#include "proxy/config/config_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "common/secret.h"

#define CONFIG_MSG_MAX 1024
#define CONFIG_NAME_MAX 64 /* account and device names */

/* ---- errors ---- */

void config_err(struct config_ctx *c, int line, const char *fmt, ...)
{
    char msg[CONFIG_MSG_MAX];
    va_list ap;
    struct config_error *e;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e = realloc(c->errors, (c->nerrors + 1) * sizeof(*e));
    if (!e) {
        c->oom = 1;
        return;
    }
    c->errors = e;
    e[c->nerrors].line = line;
    e[c->nerrors].seq = c->nerrors;
    e[c->nerrors].msg = strdup(msg);
    if (!e[c->nerrors].msg) {
        c->oom = 1;
        return;
    }
    c->nerrors++;
}

static int config_err_cmp(const void *a, const void *b)
{
    const struct config_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int config_has_error_at(const struct config_ctx *c, int line)
{
    for (size_t i = 0; i < c->nerrors; i++)
        if (c->errors[i].line == line)
            return 1;
    return 0;
}

/* All errors in line order, "FILE:LINE: message\n" each ("FILE: message" for the whole file). */
static char *config_err_text(struct config_ctx *c)
{
    size_t len = 1, off = 0;
    char *text;

    if (c->oom) {
        len = strlen(c->path) + 32;
        text = malloc(len);
        if (text)
            snprintf(text, len, "%s: out of memory\n", c->path);
        return text;
    }
    qsort(c->errors, c->nerrors, sizeof(*c->errors), config_err_cmp);
    for (size_t i = 0; i < c->nerrors; i++)
        len += strlen(c->path) + strlen(c->errors[i].msg) + 16;
    text = malloc(len);
    if (!text)
        return NULL;
    text[0] = '\0';
    for (size_t i = 0; i < c->nerrors; i++) {
        int n;
        if (c->errors[i].line > 0)
            n = snprintf(text + off, len - off, "%s:%d: %s\n", c->path, c->errors[i].line,
                         c->errors[i].msg);
        else
            n = snprintf(text + off, len - off, "%s: %s\n", c->path, c->errors[i].msg);
        if (n > 0)
            off += (size_t)n;
    }
    return text;
}

char *config_strdup(struct config_ctx *c, const char *s)
{
    char *d = strdup(s);
    if (!d)
        c->oom = 1;
    return d;
}

int config_join(char *buf, size_t len, size_t *off, const char *name)
{
    int n = snprintf(buf + *off, len - *off, "%s%s", *off ? ", " : "", name);
    if (n < 0 || (size_t)n >= len - *off)
        return 0;
    *off += (size_t)n;
    return 1;
}

/* ---- sections ---- */

/* The NAME of [account NAME] or [device NAME]; NULL for [proxy] and [upstream]. */
static const char *config_section_obj_name(const struct config_ctx *c,
                                           const struct config_section *s)
{
    if (s->def->kind == CONFIG_ACCOUNT)
        return c->cfg->accounts[s->index].name;
    if (s->def->kind == CONFIG_DEVICE)
        return c->cfg->devices[s->index].name;
    return NULL;
}

const char *config_section_name(const struct config_ctx *c, const struct config_section *s,
                                char *buf, size_t len)
{
    const char *name = config_section_obj_name(c, s);
    if (name)
        snprintf(buf, len, "[%s %s]", s->def->name, name);
    else
        snprintf(buf, len, "[%s]", s->def->name);
    return buf;
}

static struct config_section *config_find_section(struct config_ctx *c, enum config_kind kind,
                                                  const char *name)
{
    for (size_t i = 0; i < c->nsections; i++) {
        struct config_section *s = &c->sections[i];
        const char *sname = config_section_obj_name(c, s);
        if (s->def->kind == kind && (!sname || (name && strcmp(sname, name) == 0)))
            return s;
    }
    return NULL;
}

/* Append a section (and its account or device); -1 only when out of memory. */
static int config_add_section(struct config_ctx *c, const struct config_section_def *def,
                              const char *name, int line)
{
    struct config_section *ss = realloc(c->sections, (c->nsections + 1) * sizeof(*ss));
    if (!ss)
        goto oom;
    c->sections = ss;
    memset(&ss[c->nsections], 0, sizeof(*ss));
    ss[c->nsections].def = def;
    ss[c->nsections].line = line;
    if (def->kind == CONFIG_ACCOUNT) {
        struct cfg_account *a = realloc(c->cfg->accounts, (c->cfg->naccounts + 1) * sizeof(*a));
        if (!a)
            goto oom;
        c->cfg->accounts = a;
        memset(&a[c->cfg->naccounts], 0, sizeof(*a));
        a[c->cfg->naccounts].line = line;
        a[c->cfg->naccounts].name = strdup(name);
        if (!a[c->cfg->naccounts].name)
            goto oom;
        ss[c->nsections].index = c->cfg->naccounts++;
    } else if (def->kind == CONFIG_DEVICE) {
        struct cfg_device *d = realloc(c->cfg->devices, (c->cfg->ndevices + 1) * sizeof(*d));
        if (!d)
            goto oom;
        c->cfg->devices = d;
        memset(&d[c->cfg->ndevices], 0, sizeof(*d));
        d[c->cfg->ndevices].line = line;
        d[c->cfg->ndevices].name = strdup(name);
        if (!d[c->cfg->ndevices].name)
            goto oom;
        ss[c->nsections].index = c->cfg->ndevices++;
    }
    c->cur = (long)c->nsections++;
    return 0;
oom:
    c->oom = 1;
    c->cur = CONFIG_BAD_SECTION;
    return -1;
}

static int config_is_name(const char *s)
{
    size_t n = 0;
    for (; *s; s++, n++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
            return 0;
    return n > 0 && n <= CONFIG_NAME_MAX;
}

/* A "[...]" line (leading blanks already gone). We track sections ourselves: inih's handler is
 * not told about headers, so it could not report empty sections or header lines. */
static void config_section_header(struct config_ctx *c, char *line)
{
    char *close = strchr(line, ']'), *p, *word, *name;
    const struct config_section_def *def = NULL;

    c->cur = CONFIG_BAD_SECTION;
    if (!close) {
        config_err(c, c->lineno, "missing ']' in section header; valid sections: %s",
                   CONFIG_VALID_SECTIONS);
        return;
    }
    for (p = close + 1; *p == ' ' || *p == '\t'; p++)
        ;
    if (*p && *p != ';' && *p != '#') {
        config_err(c, c->lineno, "unexpected text after section header: '%s'", p);
        return;
    }
    *close = '\0';
    word = line + 1;
    while (*word == ' ' || *word == '\t')
        word++;
    name = word + strcspn(word, " \t");
    if (*name) {
        *name++ = '\0';
        while (*name == ' ' || *name == '\t')
            name++;
        p = name + strlen(name);
        while (p > name && (p[-1] == ' ' || p[-1] == '\t'))
            *--p = '\0';
    }
    for (size_t i = 0; i < config_keys_nsections; i++)
        if (strcmp(word, config_keys_sections[i].name) == 0)
            def = &config_keys_sections[i];
    if (!def) {
        config_err(c, c->lineno, "unknown section [%s%s%s]; valid sections: %s", word,
                   *name ? " " : "", name, CONFIG_VALID_SECTIONS);
        return;
    }
    if (!def->named && *name) {
        config_err(c, c->lineno, "section [%s] takes no name; write [%s]", def->name, def->name);
        return;
    }
    if (def->named && !config_is_name(name)) {
        if (*name)
            config_err(c, c->lineno,
                       "invalid %s name '%s'; use 1..%d letters, digits, '.', '_' or '-'",
                       def->name, name, CONFIG_NAME_MAX);
        else
            config_err(c, c->lineno, "[%s] needs a name: [%s NAME]", def->name, def->name);
        return;
    }
    struct config_section *dup = config_find_section(c, def->kind, name);
    if (dup) {
        if (def->named)
            config_err(c, c->lineno, "duplicate section [%s %s] (first at line %d)", def->name,
                       name, dup->line);
        else
            config_err(c, c->lineno, "duplicate section [%s] (first at line %d)", def->name,
                       dup->line);
        return;
    }
    config_add_section(c, def, name, c->lineno);
}

/* What inih will call a syntax error: no '=' or ':' before an inline comment. */
static int config_line_has_separator(const char *line)
{
    for (const char *p = line; *p; p++) {
        if (*p == '=' || *p == ':')
            return 1;
        if (*p == ';' && p > line && isspace((unsigned char)p[-1]))
            return 0;
    }
    return 0;
}

/* The fgets-style reader inih calls once per line: we count physical lines (the handler runs
 * right after its line is read), refuse lines inih would silently split, drop leading blanks so
 * inih never takes an indented line for a continuation of the previous value, and handle
 * section headers. A line we dealt with reaches inih as an empty line. */
static char *config_reader(char *str, int num, void *stream)
{
    struct config_ctx *c = stream;
    ssize_t n;
    size_t len;
    char *line;

    errno = 0;
    n = getline(&c->linebuf, &c->linecap, c->fp);
    if (n < 0) {
        if (ferror(c->fp))
            config_err(c, c->lineno + 1, "read error: %s", strerror(errno ? errno : EIO));
        return NULL;
    }
    c->lineno++;
    line = c->linebuf;
    len = (size_t)n;
    if (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (c->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    /* inih's buffer holds the line, "\r\n" and the NUL. */
    if (strlen(line) != len) {
        config_err(c, c->lineno, "line contains a NUL byte");
        line = "";
    } else if (num < 4 || len > (size_t)num - 3) {
        config_err(c, c->lineno, "line too long (%zu characters); at most %d", len,
                   num < 4 ? 0 : num - 3);
        line = "";
    } else {
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '[') {
            config_section_header(c, line);
            line = "";
        } else if (*line && *line != ';' && *line != '#' && !config_line_has_separator(line)) {
            config_err(c, c->lineno, "expected 'key = value', a [section] header or a ; comment");
            line = "";
        }
    }
    snprintf(str, (size_t)num, "%s\n", line);
    return str;
}

static void config_key_list(const struct config_section_def *def, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < def->nkeys; i++)
        if (!config_join(buf, len, &off, def->keys[i].name))
            break;
}

static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    struct config_ctx *c = user;
    struct config_section *s;
    const struct config_key *k = NULL;
    size_t ki;
    char sname[128], list[512];

    (void)section; /* ours, from config_section_header */
    if (c->cur == CONFIG_BAD_SECTION)
        return 1;
    if (c->cur == CONFIG_NO_SECTION) {
        config_err(c, c->lineno, "key '%s' is outside any section; valid sections: %s", name,
                   CONFIG_VALID_SECTIONS);
        return 1;
    }
    s = &c->sections[c->cur];
    for (ki = 0; ki < s->def->nkeys; ki++) {
        if (strcmp(s->def->keys[ki].name, name) == 0) {
            k = &s->def->keys[ki];
            break;
        }
    }
    if (!k) {
        config_key_list(s->def, list, sizeof(list));
        config_err(c, c->lineno, "unknown key '%s' in %s; valid keys: %s", name,
                   config_section_name(c, s, sname, sizeof(sname)), list);
        return 1;
    }
    if (s->key_line[ki] && !(k->flags & KEY_REPEAT)) {
        config_err(c, c->lineno, "duplicate key '%s' (first set at line %d)", name,
                   s->key_line[ki]);
        return 1;
    }
    /* Marked as set even when invalid: one error per problem, not a "missing" one as well. */
    if (!s->key_line[ki])
        s->key_line[ki] = c->lineno;
    if (!*value) {
        if (!(k->flags & KEY_EMPTY_OK))
            config_err(c, c->lineno, "%s: empty value", name);
        else
            s->key_empty[ki] = 1;
        return 1;
    }
    k->set(c, s, k, value);
    return 1;
}

/* ---- after parsing ---- */

static void config_finish(struct config_ctx *c)
{
    /* [proxy] and [upstream] may be absent: their defaults still apply. */
    for (size_t i = 0; i < 2; i++)
        if (!config_find_section(c, config_keys_sections[i].kind, NULL))
            config_add_section(c, &config_keys_sections[i], NULL, 0);
    if (!c->oom)
        config_check_all(c);
}

/* ---- public ---- */

struct cfg_account *config_account(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->naccounts; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

struct config *config_load(const char *path, char **errors)
{
    struct config_ctx c;
    struct config *ret = NULL;
    int r;

    if (errors)
        *errors = NULL;
    memset(&c, 0, sizeof(c));
    c.path = path;
    c.cur = CONFIG_NO_SECTION;
    c.cfg = calloc(1, sizeof(*c.cfg));
    if (!c.cfg || !(c.cfg->path = strdup(path))) {
        c.oom = 1;
        goto out;
    }
    c.fp = fopen(path, "re");
    if (!c.fp) {
        config_err(&c, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    r = ini_parse_stream(config_reader, &c, config_handler, &c);
    if (r == -2)
        c.oom = 1;
    else if (r > 0 && !config_has_error_at(&c, r))
        config_err(&c, r,
                   "syntax error; expected 'key = value', a [section] header or a ; "
                   "comment");
    if (!c.oom)
        config_finish(&c);
out:
    if (c.fp)
        fclose(c.fp);
    free(c.linebuf);
    for (size_t i = 0; i < c.nsections; i++)
        free(c.sections[i].account_ref);
    free(c.sections);
    if (c.oom || c.nerrors) {
        if (errors)
            *errors = config_err_text(&c);
        config_free(c.cfg);
    } else {
        ret = c.cfg;
    }
    for (size_t i = 0; i < c.nerrors; i++)
        free(c.errors[i].msg);
    free(c.errors);
    return ret;
}

static void config_free_upstream(struct cfg_upstream *u)
{
    free(u->host);
    free(u->ca_file);
    free(u->username);
    free(u->password_file);
    secret_free(u->password);
    free(u->client_certificate);
    free(u->client_key);
}

static void config_free_endpoints(struct cfg_endpoint *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].host);
        free(list[i].port);
    }
    free(list);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    config_free_endpoints(cfg->listen, cfg->nlisten);
    config_free_endpoints(cfg->listen_tls, cfg->nlisten_tls);
    free(cfg->trusted_proxies);
    free(cfg->hostname);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->state_dir);
    free(cfg->key_file);
    free(cfg->control_socket);
    free(cfg->metrics_listen.host);
    free(cfg->metrics_listen.port);
    free(cfg->dns_server.host);
    free(cfg->dns_server.port);
    free(cfg->http_proxy);
    config_free_upstream(&cfg->upstream);
    for (size_t i = 0; i < cfg->naccounts; i++) {
        struct cfg_account *a = &cfg->accounts[i];
        free(a->name);
        free(a->provider);
        free(a->grant);
        free(a->tenant);
        free(a->client_id);
        free(a->client_secret_file);
        secret_free(a->client_secret);
        free(a->client_certificate);
        free(a->client_key);
        free(a->mailbox);
        free(a->bounce_to);
        free(a->service_account_key);
        free(a->issuer);
        free(a->device_authorization_url);
        free(a->token_url);
        free(a->scope);
        free(a->graph_url);
        free(a->http_proxy);
        config_free_upstream(&a->upstream);
    }
    free(cfg->accounts);
    for (size_t i = 0; i < cfg->ndevices; i++) {
        struct cfg_device *d = &cfg->devices[i];
        free(d->name);
        free(d->addrs);
        free(d->username);
        free(d->password_hash);
        rcpt_policy_clear(&d->allow_own);
    }
    rcpt_policy_clear(&cfg->allow_recipients);
    free(cfg->devices);
    free(cfg->path);
    free(cfg);
}
