/* upstream = graph (docs/graph.md): an account that sends through Microsoft Graph's sendMail
 * instead of SMTP. Graph takes Entra ID tokens for its own resource only, allows 4 requests in
 * flight per mailbox, and has no SMTP settings; a scope for the other resource yields tokens the
 * upstream refuses (401 from Graph, 535 5.7.3 from Exchange), so it is refused here, where the
 * admin reads it, rather than at the first message. */
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config_int.h"

#define GRAPH_MAX_IN_FLIGHT 4 /* Graph's concurrent requests per mailbox */

/* 1 when scope asks for a token of host's resource ("https://HOST/..." anywhere in it). */
static int scope_names_host(const char *scope, const char *host)
{
    size_t hl = strlen(host);
    for (const char *p = strstr(scope, "://"); p; p = strstr(p + 3, "://"))
        if (strncmp(p + 3, host, hl) == 0 && (p[3 + hl] == '/' || p[3 + hl] == '\0'))
            return 1;
    return 0;
}

/* The host of a cloud's Exchange Online resource ("https://outlook.office365.com"). */
static const char *exchange_host(const struct ms_cloud_def *cloud)
{
    const char *p = strstr(cloud->resource, "://");
    return p ? p + 3 : cloud->resource;
}

static void check_smtp_scope(struct config_ctx *c, const struct config_section *s,
                             const struct cfg_account *a, const struct ms_cloud_def *cloud)
{
    int scope_line = config_check_key_set(s, "scope");
    if (scope_line && a->scope && scope_names_host(a->scope, cloud->graph_host))
        config_err(c, scope_line,
                   "[account %s]: scope '%s' asks for a Microsoft Graph token, which Exchange "
                   "Online refuses for SMTP AUTH (535 5.7.3); use %s/.default, or set upstream = "
                   "graph",
                   a->name, a->scope, cloud->resource);
}

void config_check_graph(struct config_ctx *c, const struct config_section *s)
{
    static const char *const smtp_keys[] = {"upstream_host",          "upstream_port",
                                            "upstream_auth",          "upstream_auth_policy",
                                            "upstream_tls",           "upstream_username",
                                            "upstream_password_file", "upstream_client_certificate",
                                            "upstream_client_key"};
    struct cfg_account *a = &c->cfg->accounts[s->index];
    const struct ms_cloud_def *cloud = config_cloud(a->cloud);
    int is_ms = a->provider && strcmp(a->provider, "microsoft") == 0;

    if (a->kind != UPSTREAM_KIND_GRAPH) {
        int url_line = config_check_key_set(s, "graph_url");
        if (url_line)
            config_err(c, url_line,
                       "[account %s]: graph_url is only used with upstream = graph; remove it "
                       "(or set upstream = graph)",
                       a->name);
        if (is_ms)
            check_smtp_scope(c, s, a, cloud);
        return;
    }
    int kind_line = config_check_key_set(s, "upstream");
    for (size_t i = 0; i < sizeof(smtp_keys) / sizeof(smtp_keys[0]); i++) {
        int line = config_check_key_set(s, smtp_keys[i]);
        if (line)
            config_err(c, line,
                       "[account %s]: %s is only used with upstream = smtp; Graph (upstream = "
                       "graph, line %d) is reached at graph_url with the account's token",
                       a->name, smtp_keys[i], kind_line);
    }
    if (a->provider && !is_ms) {
        config_err(c, kind_line,
                   "[account %s]: upstream = graph needs provider = microsoft (Microsoft Graph "
                   "takes Entra ID tokens), not %s",
                   a->name, a->provider);
        return;
    }
    if (!a->graph_url)
        a->graph_url = config_check_fmt(c, "https://%s", cloud->graph_host);
    else {
        size_t n = strlen(a->graph_url);
        while (n > 0 && a->graph_url[n - 1] == '/')
            a->graph_url[--n] = '\0';
    }
    /* The provider's default scope is Exchange's: Graph's own replaces it. Delegated tokens
     * carry the signed-in user's Mail.Send (and Mail.ReadWrite for large messages). */
    int scope_line = config_check_key_set(s, "scope");
    if (!scope_line) {
        free(a->scope);
        if (a->grant && strcmp(a->grant, "refresh_token") == 0)
            a->scope =
                config_check_fmt(c, "https://%s/Mail.Send https://%s/Mail.ReadWrite offline_access",
                                 cloud->graph_host, cloud->graph_host);
        else
            a->scope = config_check_fmt(c, "https://%s/.default", cloud->graph_host);
    } else if (a->scope && scope_names_host(a->scope, exchange_host(cloud))) {
        config_err(c, scope_line,
                   "[account %s]: scope '%s' asks for an Exchange Online token, which Microsoft "
                   "Graph refuses (401 InvalidAuthenticationToken); use https://%s/.default, or "
                   "remove scope",
                   a->name, a->scope, cloud->graph_host);
    }
    int conn_line = config_check_key_set(s, "max_upstream_connections");
    if (conn_line &&
        (a->max_upstream_connections == 0 || a->max_upstream_connections > GRAPH_MAX_IN_FLIGHT))
        config_err(c, conn_line,
                   "[account %s]: max_upstream_connections = %u; with upstream = graph it is the "
                   "requests in flight for the mailbox, 1 to %d (Graph allows %d at once per "
                   "mailbox and answers 429 beyond)",
                   a->name, a->max_upstream_connections, GRAPH_MAX_IN_FLIGHT, GRAPH_MAX_IN_FLIGHT);
}
