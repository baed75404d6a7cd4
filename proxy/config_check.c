/* After parsing: defaults go through the same setters as the file's values, then what spans keys
 * and sections is checked (required keys, TLS pairs, account references, duplicates) and the
 * values computed from others are filled in (hostname, token_url, scope, account upstreams). */
#include "proxy/config_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_MS_TOKEN_URL_HEAD "https://login.microsoftonline.com/"
#define CONFIG_MS_TOKEN_URL_TAIL "/oauth2/v2.0/token"
#define CONFIG_MS_DEVICE_TAIL "/oauth2/v2.0/devicecode"
#define CONFIG_MS_SCOPE "https://outlook.office365.com/.default"
#define CONFIG_MS_DELEGATED_SCOPE "https://outlook.office.com/SMTP.Send offline_access"
#define CONFIG_GOOGLE_TOKEN_URL "https://oauth2.googleapis.com/token"
#define CONFIG_GOOGLE_SCOPE "https://mail.google.com/"

/* The line where key name was given a value; 0 if it was not (or was given as "key ="). */
static int config_check_key_set(const struct config_section *s, const char *name)
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

/* A string built from parts, or oom noted. */
static char *config_check_concat(struct config_ctx *c, const char *a, const char *b, const char *d)
{
    size_t len = strlen(a) + strlen(b) + strlen(d) + 1;
    char *r = malloc(len);
    if (!r) {
        c->oom = 1;
        return NULL;
    }
    snprintf(r, len, "%s%s%s", a, b, d);
    return r;
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
    if (!cfg->control_socket && cfg->state_dir)
        cfg->control_socket = config_check_concat(c, cfg->state_dir, "/control.sock", "");
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

static void config_check_account(struct config_ctx *c, const struct config_section *s)
{
    struct cfg_account *a = &c->cfg->accounts[s->index];
    const struct cfg_upstream *up = &c->cfg->upstream;

    config_check_grant(c, s);
    if (a->provider && strcmp(a->provider, "microsoft") == 0) {
        if (!a->token_url && !config_check_key_set(s, "tenant")) {
            config_err(c, s->line,
                       "[account %s]: missing required key 'tenant' (the tenant id or domain; "
                       "required with provider = microsoft unless token_url is set)",
                       a->name);
        } else if (!a->token_url && a->tenant) {
            a->token_url = config_check_concat(c, CONFIG_MS_TOKEN_URL_HEAD, a->tenant,
                                               CONFIG_MS_TOKEN_URL_TAIL);
        }
        if (!a->device_authorization_url && a->tenant)
            a->device_authorization_url =
                config_check_concat(c, CONFIG_MS_TOKEN_URL_HEAD, a->tenant, CONFIG_MS_DEVICE_TAIL);
        /* Delegated tokens carry the user's permission to send (SMTP.Send), and offline_access
         * brings the refresh token; app-only tokens ask for the app's roles (.default). */
        if (!a->scope)
            a->scope = config_strdup(c, a->grant && strcmp(a->grant, "refresh_token") == 0
                                            ? CONFIG_MS_DELEGATED_SCOPE
                                            : CONFIG_MS_SCOPE);
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
    if (!a->upstream.host && up->host)
        a->upstream.host = config_strdup(c, up->host);
    if (!a->upstream.port)
        a->upstream.port = up->port;
    if (!a->upstream.ca_file && up->ca_file)
        a->upstream.ca_file = config_strdup(c, up->ca_file);
    if (a->upstream.auth == UPSTREAM_AUTH_UNSET)
        a->upstream.auth = up->auth;
    /* Exchange Online answers 432 4.3.2 beyond 30 messages a minute per mailbox. */
    if (!config_check_key_set(s, "rate_limit"))
        a->rate_limit = a->provider && strcmp(a->provider, "microsoft") == 0 ? 30 : 0;
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
        else if (s->def->kind == CONFIG_ACCOUNT)
            config_check_account(c, s);
        else if (s->def->kind == CONFIG_DEVICE)
            config_check_device(c, s);
    }
    if (c->cfg->ndevices == 0)
        config_err(c, 0, "no [device NAME] section: no client could ever relay");
}
