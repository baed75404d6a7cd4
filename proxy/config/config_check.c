/* After parsing: defaults go through the same setters as the file's values, then what spans keys
 * and sections is checked (required keys, TLS pairs, account references, duplicates) and the
 * values computed from others are filled in (hostname, token_url, scope, account upstreams). */
#include "proxy/config/config_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/secret.h"

#define CONFIG_MS_TOKEN_URL_TAIL "/oauth2/v2.0/token"
#define CONFIG_MS_DEVICE_TAIL "/oauth2/v2.0/devicecode"
#define CONFIG_GOOGLE_TOKEN_URL "https://oauth2.googleapis.com/token"
#define CONFIG_GOOGLE_SCOPE "https://mail.google.com/"

/* Microsoft's national clouds (Microsoft's "national cloud deployments" pages). Where a value is
 * not documented for SMTP, the choice and why are in docs/configuration.md ("cloud"). */
static const struct ms_cloud_def config_clouds[] = {
    [MS_CLOUD_GLOBAL] = {"global", "login.microsoftonline.com", "smtp.office365.com",
                         "https://outlook.office365.com",
                         "https://outlook.office.com/SMTP.Send offline_access",
                         "graph.microsoft.com"},
    [MS_CLOUD_USGOV] = {"usgov", "login.microsoftonline.us", "smtp.office365.us",
                        "https://outlook.office365.us",
                        "https://outlook.office365.us/SMTP.Send offline_access",
                        "graph.microsoft.us"},
    [MS_CLOUD_USGOVDOD] = {"usgovdod", "login.microsoftonline.us", "smtp.office365.us",
                           "https://outlook.office365.us",
                           "https://outlook.office365.us/SMTP.Send offline_access",
                           "dod-graph.microsoft.us"},
    [MS_CLOUD_CHINA] = {"china", "login.partner.microsoftonline.cn", "smtp.partner.outlook.cn",
                        "https://partner.outlook.cn",
                        "https://partner.outlook.cn/SMTP.Send offline_access",
                        "microsoftgraph.chinacloudapi.cn"},
};

const struct ms_cloud_def *config_cloud(enum ms_cloud cloud)
{
    size_t i = (size_t)cloud;
    return i < sizeof(config_clouds) / sizeof(config_clouds[0]) ? &config_clouds[i]
                                                                : &config_clouds[MS_CLOUD_GLOBAL];
}

const char *config_upstream_auth_name(enum upstream_auth a)
{
    switch (a) {
    case UPSTREAM_AUTH_XOAUTH2:
        return "xoauth2";
    case UPSTREAM_AUTH_OAUTHBEARER:
        return "oauthbearer";
    case UPSTREAM_AUTH_PLAIN:
        return "plain";
    case UPSTREAM_AUTH_LOGIN:
        return "login";
    case UPSTREAM_AUTH_NONE:
        return "none";
    default:
        return "auto";
    }
}

int config_upstream_needs_token(const struct cfg_upstream *u)
{
    return u->policy != UPSTREAM_POLICY_DISABLED &&
           (u->auth == UPSTREAM_AUTH_AUTO || u->auth == UPSTREAM_AUTH_XOAUTH2 ||
            u->auth == UPSTREAM_AUTH_OAUTHBEARER);
}

int config_upstream_needs_password(const struct cfg_upstream *u)
{
    return u->policy != UPSTREAM_POLICY_DISABLED &&
           (u->auth == UPSTREAM_AUTH_PLAIN || u->auth == UPSTREAM_AUTH_LOGIN);
}

/* The line where key name was given a value; 0 if it was not (or was given as "key ="). */
int config_check_key_set(const struct config_section *s, const char *name)
{
    for (size_t i = 0; i < s->def->nkeys; i++)
        if (strcmp(s->def->keys[i].name, name) == 0)
            return s->key_empty[i] ? 0 : s->key_line[i];
    return 0;
}

static void config_check_apply_defaults(struct config_ctx *c, struct config_section *s)
{
    for (size_t i = 0; i < s->def->nkeys; i++) {
        const struct config_key *k = &s->def->keys[i];
        if ((s->key_line[i] && !s->key_empty[i]) || !k->def)
            continue;
        c->lineno = s->line;
        k->set(c, s, k, k->def);
    }
}

static void config_check_missing_keys(struct config_ctx *c, struct config_section *s)
{
    char sname[128], list[256];
    for (size_t i = 0; i < s->def->nkeys; i++) {
        const struct config_key *k = &s->def->keys[i];
        if (!(k->flags & KEY_REQUIRED) || s->key_line[i])
            continue;
        config_section_name(c, s, sname, sizeof(sname));
        if (k->choices)
            config_err(c, s->line, "%s: missing required key '%s'; valid: %s", sname, k->name,
                       config_value_choices(k->choices, list, sizeof(list)));
        else
            config_err(c, s->line, "%s: missing required key '%s' (%s)", sname, k->name, k->what);
    }
}

/* A string built with a format, or oom noted. */
char *config_check_fmt(struct config_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *r = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!r) {
        c->oom = 1;
        return NULL;
    }
    va_start(ap, fmt);
    vsnprintf(r, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return r;
}

static const struct config_section *config_check_upstream_section(const struct config_ctx *c)
{
    for (size_t i = 0; i < c->nsections; i++)
        if (c->sections[i].def->kind == CONFIG_UPSTREAM)
            return &c->sections[i];
    return NULL;
}

/* A pair of keys that only work together (user name and password, certificate and key). */
static void config_check_pair(struct config_ctx *c, const struct config_section *s, const char *k1,
                              const char *k2)
{
    int l1 = config_check_key_set(s, k1), l2 = config_check_key_set(s, k2);
    if (l1 && !l2)
        config_err(c, l1, "%s is set but %s is not; set both", k1, k2);
    if (l2 && !l1)
        config_err(c, l2, "%s is set but %s is not; set both", k2, k1);
}

static void config_check_upstream(struct config_ctx *c, const struct config_section *s)
{
    config_check_pair(c, s, "upstream_username", "upstream_password_file");
    config_check_pair(c, s, "upstream_client_certificate", "upstream_client_key");
}

static void config_check_proxy(struct config_ctx *c, const struct config_section *s)
{
    struct config *cfg = c->cfg;
    int cert = config_check_key_set(s, "tls_cert"), key = config_check_key_set(s, "tls_key");

    if (cfg->nlisten + cfg->nlisten_tls == 0) {
        if (s->line)
            config_err(c, s->line,
                       "[proxy]: at least one listen or listen_tls is required, e.g. "
                       "listen = 0.0.0.0:2525");
        else
            config_err(c, 0,
                       "no [proxy] section; it needs at least one listen or listen_tls, e.g. "
                       "listen = 0.0.0.0:2525");
    }
    if (cert && !key)
        config_err(c, cert, "tls_cert is set but tls_key is not; set both");
    if (key && !cert)
        config_err(c, key, "tls_key is set but tls_cert is not; set both");
    if (cfg->nlisten_tls && !cert && !key)
        config_err(c, cfg->listen_tls[0].line, "listen_tls needs tls_cert and tls_key in [proxy]");
    /* The same address twice would fail at bind() with a less helpful message. */
    for (size_t i = 0; i < cfg->nlisten + cfg->nlisten_tls; i++) {
        const struct cfg_endpoint *a =
            i < cfg->nlisten ? &cfg->listen[i] : &cfg->listen_tls[i - cfg->nlisten];
        for (size_t j = 0; j < i; j++) {
            const struct cfg_endpoint *b =
                j < cfg->nlisten ? &cfg->listen[j] : &cfg->listen_tls[j - cfg->nlisten];
            if (strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0) {
                config_err(c, a->line, "%s:%s is already listened on (line %d)", a->host, a->port,
                           b->line);
                break;
            }
        }
    }
    /* A proxy_protocol listener believes the header only from trusted_proxies: without any,
     * it would refuse every connection. */
    for (size_t i = 0; i < cfg->nlisten + cfg->nlisten_tls; i++) {
        const struct cfg_endpoint *a =
            i < cfg->nlisten ? &cfg->listen[i] : &cfg->listen_tls[i - cfg->nlisten];
        if (a->proxy_protocol && cfg->ntrusted_proxies == 0) {
            config_err(c, a->line,
                       "%s:%s proxy_protocol needs trusted_proxies in [proxy] (the load "
                       "balancers' addresses)",
                       a->host, a->port);
            break;
        }
    }
    if (!cfg->control_socket && cfg->state_dir)
        cfg->control_socket = config_check_fmt(c, "%s/control.sock", cfg->state_dir);
    /* sockaddr_un's sun_path holds 108 bytes with its NUL. */
    if (cfg->control_socket && strlen(cfg->control_socket) >= 108)
        config_err(c,
                   config_check_key_set(s, "control_socket")
                       ? config_check_key_set(s, "control_socket")
                       : s->line,
                   "control_socket: '%s' is longer than the 107 bytes a UNIX socket path can "
                   "have; set a shorter control_socket",
                   cfg->control_socket);
    if (!cfg->hostname) {
        char host[256] = "localhost";
        if (gethostname(host, sizeof(host)) != 0 || !host[0])
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        cfg->hostname = config_strdup(c, host);
    }
}

/* What proves who the account is depends on the grant:
 *   client_credentials  a client secret, or a certificate and its key (exactly one of the two);
 *   refresh_token       the refresh token in the token store; a client secret only for
 *                       confidential clients, never a certificate;
 *   service_account     google's JSON key file. */
static void config_check_credential(struct config_ctx *c, const struct config_section *s)
{
    const struct cfg_account *a = &c->cfg->accounts[s->index];
    int secret = config_check_key_set(s, "client_secret_file");
    int cert = config_check_key_set(s, "client_certificate");
    int key = config_check_key_set(s, "client_key");
    int sak = config_check_key_set(s, "service_account_key");
    const char *grant = a->grant ? a->grant : "";

    if (sak && strcmp(grant, "service_account") != 0)
        config_err(c, sak,
                   "service_account_key is only used with provider = google and grant = "
                   "service_account");
    if (strcmp(grant, "service_account") == 0) {
        if (!sak)
            config_err(c, s->line,
                       "[account %s]: missing required key 'service_account_key' (the service "
                       "account's JSON key file, mode 0600)",
                       a->name);
        if (secret || cert || key)
            config_err(c,
                       secret ? secret
                       : cert ? cert
                              : key,
                       "[account %s]: grant = service_account signs with service_account_key; "
                       "remove client_secret_file, client_certificate and client_key",
                       a->name);
        return;
    }
    if (cert && !key)
        config_err(c, cert, "client_certificate is set but client_key is not; set both");
    if (key && !cert)
        config_err(c, key, "client_key is set but client_certificate is not; set both");
    if (secret && (cert || key))
        config_err(c, cert ? cert : key,
                   "[account %s]: client_secret_file (line %d) and a certificate are both set; "
                   "use one of the two",
                   a->name, secret);
    if (strcmp(grant, "refresh_token") == 0) {
        if (cert || key)
            config_err(c, cert ? cert : key,
                       "[account %s]: grant = refresh_token does not use a certificate; remove "
                       "client_certificate and client_key (client_secret_file only for a "
                       "confidential client)",
                       a->name);
        if (!c->cfg->key_file)
            config_err(c, s->line,
                       "[account %s]: grant = refresh_token keeps its refresh token in the token "
                       "store: set key_file in [proxy] (make one with: head -c 32 /dev/urandom > "
                       "FILE; chmod 600 FILE)",
                       a->name);
        return;
    }
    if (!secret && !cert && !key)
        config_err(c, s->line,
                   "[account %s]: missing required key 'client_secret_file' (a file of mode "
                   "0600), or 'client_certificate' and 'client_key' (PEM files, the key of mode "
                   "0600)",
                   a->name);
}

static void config_check_grant(struct config_ctx *c, const struct config_section *s)
{
    struct cfg_account *a = &c->cfg->accounts[s->index];
    int grant_line = config_check_key_set(s, "grant");
    int google = a->provider && strcmp(a->provider, "google") == 0;

    if (!a->grant)
        a->grant = config_strdup(c, google ? "service_account" : "client_credentials");
    if (!a->grant)
        return;
    if (google && strcmp(a->grant, "client_credentials") == 0)
        config_err(c, grant_line,
                   "[account %s]: provider = google has no client_credentials grant; valid: "
                   "service_account (domain-wide delegation), refresh_token",
                   a->name);
    if (!google && strcmp(a->grant, "service_account") == 0)
        config_err(c, grant_line,
                   "[account %s]: grant = service_account is google's; valid with provider = "
                   "%s: client_credentials, refresh_token",
                   a->name, a->provider ? a->provider : "?");
    if (!config_check_key_set(s, "client_id") && strcmp(a->grant, "service_account") != 0)
        config_err(c, s->line,
                   "[account %s]: missing required key 'client_id' (the application (client) "
                   "id)",
                   a->name);
}

/* The account's upstream: what it does not set comes from [upstream] (a user name and its
 * password, and a certificate and its key, come as pairs), then what spans the keys. */
static void config_check_upstream_kind(struct config_ctx *c, const struct config_section *s)
{
    struct cfg_account *a = &c->cfg->accounts[s->index];
    const struct cfg_upstream *up = &c->cfg->upstream;
    struct cfg_upstream *u = &a->upstream;
    const struct config_section *us = config_check_upstream_section(c);
    const struct ms_cloud_def *cloud = config_cloud(a->cloud);
    int host_line = config_check_key_set(s, "upstream_host");
    int auth_line = config_check_key_set(s, "upstream_auth");
    int tls_line = config_check_key_set(s, "upstream_tls");
    int user_line = config_check_key_set(s, "upstream_username");
    int pw_line = config_check_key_set(s, "upstream_password_file");
    int cert_line = config_check_key_set(s, "upstream_client_certificate");
    int key_line = config_check_key_set(s, "upstream_client_key");

    /* The cloud's submission host, unless [upstream] names a host of its own. */
    if (!u->host) {
        if (!us || !config_check_key_set(us, "host"))
            u->host = config_strdup(c, cloud->smtp_host);
        else if (up->host)
            u->host = config_strdup(c, up->host);
    }
    if (!u->port)
        u->port = up->port;
    if (!u->ca_file && up->ca_file)
        u->ca_file = config_strdup(c, up->ca_file);
    config_check_pair(c, s, "upstream_username", "upstream_password_file");
    config_check_pair(c, s, "upstream_client_certificate", "upstream_client_key");
    if (!user_line && !pw_line) {
        if (up->username)
            u->username = config_strdup(c, up->username);
        if (up->password_file)
            u->password_file = config_strdup(c, up->password_file);
        if (up->password && !(u->password = secret_dup(up->password)))
            c->oom = 1;
    }
    if (!cert_line && !key_line) {
        if (up->client_certificate)
            u->client_certificate = config_strdup(c, up->client_certificate);
        if (up->client_key)
            u->client_key = config_strdup(c, up->client_key);
    }

    /* An invalid value of the account's own was reported; what spans keys is then moot. */
    int policy_line0 = config_check_key_set(s, "upstream_auth_policy");
    int invalid = (auth_line && u->auth == UPSTREAM_AUTH_UNSET) ||
                  (tls_line && u->tls == UPSTREAM_TLS_UNSET) ||
                  (policy_line0 && u->policy == UPSTREAM_POLICY_UNSET);
    if (u->auth == UPSTREAM_AUTH_UNSET)
        u->auth = up->auth;
    if (u->tls == UPSTREAM_TLS_UNSET)
        u->tls = up->tls;
    if (u->policy == UPSTREAM_POLICY_UNSET)
        u->policy = up->policy;
    if (invalid)
        return;
    const char *auth = config_upstream_auth_name(u->auth);
    if (u->auth == UPSTREAM_AUTH_NONE) {
        int policy_line = config_check_key_set(s, "upstream_auth_policy");
        if (policy_line && u->policy == UPSTREAM_POLICY_REQUIRED)
            config_err(c, policy_line,
                       "[account %s]: upstream_auth_policy = required, but upstream_auth = none "
                       "never authenticates; remove upstream_auth_policy",
                       a->name);
        u->policy = UPSTREAM_POLICY_DISABLED; /* nothing to authenticate with */
    }
    int cred_anywhere = user_line || pw_line ||
                        (us && (config_check_key_set(us, "upstream_username") ||
                                config_check_key_set(us, "upstream_password_file")));
    if (config_upstream_needs_password(u) && !cred_anywhere)
        config_err(c, auth_line ? auth_line : s->line,
                   "[account %s]: upstream_auth = %s needs upstream_username and "
                   "upstream_password_file (a file of mode 0600 holding the password), in the "
                   "account or in [upstream]",
                   a->name, auth);
    if ((user_line || pw_line) && u->auth != UPSTREAM_AUTH_PLAIN && u->auth != UPSTREAM_AUTH_LOGIN)
        config_err(c, user_line ? user_line : pw_line,
                   "[account %s]: upstream_username and upstream_password_file are only used with "
                   "upstream_auth = plain or login, not %s",
                   a->name, auth);
    if (u->tls == UPSTREAM_TLS_OPPORTUNISTIC &&
        (config_upstream_needs_token(u) || config_upstream_needs_password(u)))
        config_err(c,
                   tls_line    ? tls_line
                   : auth_line ? auth_line
                               : s->line,
                   "[account %s]: upstream_tls = opportunistic sends in plain text when the "
                   "upstream offers no STARTTLS, and upstream_auth = %s would send %s in it; use "
                   "upstream_tls = starttls or implicit, or upstream_auth = none",
                   a->name, auth,
                   config_upstream_needs_token(u) ? "an OAuth token" : "the password");
    if (u->auth == UPSTREAM_AUTH_NONE && u->host && u->port == 587) {
        for (size_t i = 0; i < sizeof(config_clouds) / sizeof(config_clouds[0]); i++)
            if (strcmp(u->host, config_clouds[i].smtp_host) == 0) {
                config_err(c,
                           host_line   ? host_line
                           : auth_line ? auth_line
                                       : s->line,
                           "[account %s]: upstream_auth = none to %s:587, which refuses "
                           "unauthenticated mail (530 5.7.57); for direct send set upstream_host "
                           "to the tenant's MX endpoint (contoso-com.mail.protection.outlook.com) "
                           "and upstream_port = 25",
                           a->name, u->host);
                break;
            }
    }
}

/* An account that sends no token has no provider: a token key is a mistake worth saying. */
static void config_check_tokenless(struct config_ctx *c, const struct config_section *s)
{
    static const char *const token_keys[] = {
        "grant",      "tenant",    "client_id", "client_secret_file",       "client_certificate",
        "client_key", "token_url", "issuer",    "device_authorization_url", "service_account_key",
        "scope"};
    struct cfg_account *a = &c->cfg->accounts[s->index];
    char why[96];
    if (a->upstream.policy == UPSTREAM_POLICY_DISABLED && a->upstream.auth != UPSTREAM_AUTH_NONE)
        snprintf(why, sizeof(why), "upstream_auth_policy = disabled sends no credentials");
    else if (a->upstream.auth == UPSTREAM_AUTH_NONE)
        snprintf(why, sizeof(why), "upstream_auth = none sends no credentials");
    else
        snprintf(why, sizeof(why), "upstream_auth = %s sends a password, not a token",
                 config_upstream_auth_name(a->upstream.auth));
    for (size_t i = 0; i < sizeof(token_keys) / sizeof(token_keys[0]); i++) {
        int line = config_check_key_set(s, token_keys[i]);
        if (line)
            config_err(c, line,
                       "[account %s]: %s is only used to get OAuth tokens, and %s; remove it (or "
                       "set provider)",
                       a->name, token_keys[i], why);
    }
    a->provider = config_strdup(c, "none");
    free(a->grant);
    a->grant = config_strdup(c, "none");
}

static void config_check_account(struct config_ctx *c, const struct config_section *s)
{
    struct cfg_account *a = &c->cfg->accounts[s->index];
    const struct ms_cloud_def *cloud = config_cloud(a->cloud);
    int cloud_line = config_check_key_set(s, "cloud");

    if (!config_check_key_set(s, "max_upstream_connections"))
        a->max_upstream_connections = a->kind == UPSTREAM_KIND_GRAPH ? 4 : 3;
    config_check_upstream_kind(c, s);
    a->graph_host = cloud->graph_host;
    if (!a->http_proxy && c->cfg->http_proxy)
        a->http_proxy = config_strdup(c, c->cfg->http_proxy);
    /* A provider given but invalid was reported already. */
    if (!a->provider && !config_check_key_set(s, "provider")) {
        if (!config_upstream_needs_token(&a->upstream)) {
            config_check_tokenless(c, s);
            a->rate_limit = config_check_key_set(s, "rate_limit") ? a->rate_limit : 0;
            if (!config_check_key_set(s, "daily_recipient_limit"))
                a->daily_recipient_limit = 0;
            return;
        }
        config_err(c, s->line,
                   "[account %s]: missing required key 'provider'; valid: microsoft, google, "
                   "oauth2 (upstream_auth = %s sends an OAuth token; an upstream that takes a "
                   "password or nothing needs no provider: upstream_auth = plain, login or none)",
                   a->name, config_upstream_auth_name(a->upstream.auth));
    }
    if (cloud_line && a->provider && strcmp(a->provider, "microsoft") != 0)
        config_err(c, cloud_line,
                   "[account %s]: cloud is only used with provider = microsoft (it picks Entra "
                   "ID's and Exchange Online's endpoints)",
                   a->name);
    config_check_grant(c, s);
    if (a->provider && strcmp(a->provider, "microsoft") == 0) {
        if (!a->token_url && !config_check_key_set(s, "tenant")) {
            config_err(c, s->line,
                       "[account %s]: missing required key 'tenant' (the tenant id or domain; "
                       "required with provider = microsoft unless token_url is set)",
                       a->name);
        } else if (!a->token_url && a->tenant) {
            a->token_url = config_check_fmt(c, "https://%s/%s%s", cloud->login_host, a->tenant,
                                            CONFIG_MS_TOKEN_URL_TAIL);
        }
        if (!a->device_authorization_url && a->tenant)
            a->device_authorization_url = config_check_fmt(c, "https://%s/%s%s", cloud->login_host,
                                                           a->tenant, CONFIG_MS_DEVICE_TAIL);
        /* Delegated tokens carry the user's permission to send (SMTP.Send), and offline_access
         * brings the refresh token; app-only tokens ask for the app's roles (.default). */
        if (!a->scope) {
            if (a->grant && strcmp(a->grant, "refresh_token") == 0)
                a->scope = config_strdup(c, cloud->delegated_scope);
            else
                a->scope = config_check_fmt(c, "%s/.default", cloud->resource);
        }
    } else if (a->provider && strcmp(a->provider, "google") == 0) {
        /* For service_account the key file's token_uri applies unless token_url is set. */
        if (!a->token_url && a->grant && strcmp(a->grant, "refresh_token") == 0)
            a->token_url = config_strdup(c, CONFIG_GOOGLE_TOKEN_URL);
        if (!a->scope)
            a->scope = config_strdup(c, CONFIG_GOOGLE_SCOPE);
    } else if (a->provider && strcmp(a->provider, "oauth2") == 0) {
        int tu = config_check_key_set(s, "token_url"), is = config_check_key_set(s, "issuer");
        if (!tu && !is)
            config_err(c, s->line,
                       "[account %s]: missing required key 'token_url' or 'issuer' (one is "
                       "required with provider = oauth2)",
                       a->name);
        else if (tu && is)
            config_err(c, is,
                       "[account %s]: token_url (line %d) and issuer are both set; use one (issuer "
                       "discovers the token endpoint)",
                       a->name, tu);
    }
    if (a->issuer && a->provider && strcmp(a->provider, "oauth2") != 0)
        config_err(c, config_check_key_set(s, "issuer"),
                   "[account %s]: issuer is only used with provider = oauth2", a->name);
    config_check_credential(c, s);
    /* Exchange Online answers 432 4.3.2 beyond 30 messages a minute per mailbox over SMTP;
     * Graph's limits are per 10 minutes and its 429s are honoured instead. */
    if (!config_check_key_set(s, "rate_limit"))
        a->rate_limit =
            a->provider && strcmp(a->provider, "microsoft") == 0 && a->kind == UPSTREAM_KIND_SMTP
                ? 30
                : 0;
    /* Exchange Online: 10,000 recipients a day per mailbox, by SMTP or Graph
     * (docs/account-budget.md). */
    if (!config_check_key_set(s, "daily_recipient_limit"))
        a->daily_recipient_limit = a->provider && strcmp(a->provider, "microsoft") == 0 ? 10000 : 0;
    config_check_graph(c, s);
}

static void config_check_device(struct config_ctx *c, struct config_section *s)
{
    struct config *cfg = c->cfg;
    struct cfg_device *d = &cfg->devices[s->index];
    int user_line = config_check_key_set(s, "username");
    int hash_line = config_check_key_set(s, "password_hash");
    int addr_line = config_check_key_set(s, "address");
    int acct_line = config_check_key_set(s, "account");

    if (!addr_line && !user_line)
        config_err(c, s->line, "[device %s]: needs address, username, or both", d->name);
    if (user_line && !hash_line)
        config_err(c, s->line,
                   "[device %s]: missing required key 'password_hash' (required with "
                   "username; make one with: mkpasswd -m yescrypt)",
                   d->name);
    if (hash_line && !user_line)
        config_err(c, hash_line,
                   "password_hash is set but username is not; add username or remove "
                   "password_hash");
    if (d->username) {
        for (size_t i = 0; i < s->index; i++) {
            if (cfg->devices[i].username && strcmp(cfg->devices[i].username, d->username) == 0) {
                config_err(c, user_line, "username '%s' is already used by [device %s] (line %d)",
                           d->username, cfg->devices[i].name, cfg->devices[i].line);
                break;
            }
        }
    }
    /* A device without allow_recipients of its own follows [proxy]'s (borrowed: cfg outlives it).
     */
    d->allow_recipients = d->allow_own.rules ? &d->allow_own : &cfg->allow_recipients;
    /* the limits: this section's, else [proxy]'s (docs/device-limits.md) */
    if (!config_check_key_set(s, "max_messages_per_hour"))
        d->max_messages_per_hour = cfg->max_messages_per_hour;
    if (!config_check_key_set(s, "max_recipients_per_day"))
        d->max_recipients_per_day = cfg->max_recipients_per_day;
    if (!config_check_key_set(s, "block_after_refusals"))
        d->block_after_refusals = cfg->block_after_refusals;
    if (acct_line && s->account_ref) {
        d->account = config_account(cfg, s->account_ref);
        if (!d->account) {
            char list[512] = "";
            size_t off = 0;
            for (size_t i = 0; i < cfg->naccounts; i++)
                if (!config_join(list, sizeof(list), &off, cfg->accounts[i].name))
                    break;
            config_err(c, acct_line, "account: no [account %s] section; defined accounts: %s",
                       s->account_ref, cfg->naccounts ? list : "none");
        }
    }
}

void config_check_all(struct config_ctx *c)
{
    /* [upstream] first: accounts inherit from it. */
    for (size_t i = 0; i < c->nsections; i++)
        if (c->sections[i].def->kind == CONFIG_UPSTREAM)
            config_check_apply_defaults(c, &c->sections[i]);
    for (size_t i = 0; i < c->nsections; i++)
        if (c->sections[i].def->kind != CONFIG_UPSTREAM)
            config_check_apply_defaults(c, &c->sections[i]);
    for (size_t i = 0; i < c->nsections; i++) {
        struct config_section *s = &c->sections[i];
        config_check_missing_keys(c, s);
        if (s->def->kind == CONFIG_PROXY)
            config_check_proxy(c, s);
        else if (s->def->kind == CONFIG_UPSTREAM)
            config_check_upstream(c, s);
        else if (s->def->kind == CONFIG_ACCOUNT)
            config_check_account(c, s);
        else if (s->def->kind == CONFIG_DEVICE)
            config_check_device(c, s);
    }
    if (c->cfg->ndevices == 0)
        config_err(c, 0, "no [device NAME] section: no client could ever relay");
}
