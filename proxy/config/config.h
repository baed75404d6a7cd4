/* The config file (INI via libinih): load, validate everything, report every problem as
 * "FILE:LINE: message" with what would be valid. Names here are the user interface. */
#ifndef SOP_CONFIG_H
#define SOP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "proxy/config/cidr.h"
#include "proxy/config/rcpt_policy.h"
#include "proxy/smtp/smtp_data.h"

struct cfg_endpoint {
    char *host; /* "0.0.0.0", "::", "127.0.0.1", "*" (all); brackets of [v6] removed */
    char *port; /* numeric, 1..65535 */
    int line;
    /* `listen = ADDR proxy_protocol`: every connection starts with a PROXY protocol v1/v2
     * header from one of trusted_proxies, naming the device's address */
    int proxy_protocol;
};

/* upstream_auth: how the proxy authenticates upstream. The first three send an OAuth token (the
 * account needs a provider); plain and login a user name and password; none nothing. */
enum upstream_auth {
    UPSTREAM_AUTH_UNSET,       /* an account without upstream_auth: [upstream]'s applies */
    UPSTREAM_AUTH_AUTO,        /* XOAUTH2 if the EHLO offers it, else OAUTHBEARER */
    UPSTREAM_AUTH_XOAUTH2,     /* XOAUTH2 only */
    UPSTREAM_AUTH_OAUTHBEARER, /* OAUTHBEARER (RFC 7628) only */
    UPSTREAM_AUTH_PLAIN,       /* AUTH PLAIN with upstream_username and the password file */
    UPSTREAM_AUTH_LOGIN,       /* AUTH LOGIN, the same credentials */
    UPSTREAM_AUTH_NONE,        /* no AUTH at all (direct send, an IP- or certificate-based relay) */
};

/* upstream_auth_policy (Domino's three choices for its relay host). */
enum upstream_auth_policy {
    UPSTREAM_POLICY_UNSET,
    UPSTREAM_POLICY_REQUIRED, /* never send without authenticating (the default) */
    UPSTREAM_POLICY_ENABLED,  /* authenticate when the EHLO offers a usable mechanism, else send
                               * unauthenticated (logged once per connection) */
    UPSTREAM_POLICY_DISABLED, /* never authenticate */
};

/* upstream_tls: how the upstream connection gets its TLS. Certificates are always verified. */
enum upstream_tls {
    UPSTREAM_TLS_UNSET,
    UPSTREAM_TLS_STARTTLS,      /* STARTTLS or nothing (the default) */
    UPSTREAM_TLS_IMPLICIT,      /* TLS from the first byte (SMTPS, port 465) */
    UPSTREAM_TLS_OPPORTUNISTIC, /* STARTTLS when offered, else plain text: only with nothing
                                 * secret to send (upstream_auth = none) */
};

struct cfg_upstream {
    char *host; /* DNS name (or IP literal, checked against the certificate's IP SAN) */
    uint16_t port;
    char *ca_file;                    /* NULL: the system trust store */
    enum upstream_auth auth;          /* never UNSET once loaded */
    enum upstream_auth_policy policy; /* never UNSET once loaded */
    enum upstream_tls tls;            /* never UNSET once loaded */
    char *username;                   /* plain/login: the user name */
    char *password_file;              /* plain/login: a file of mode 0600 holding the password */
    char *password;                   /* loaded by config_load; wiped by config_free */
    /* A TLS client certificate for the upstream handshake (a certificate-based connector) and
     * its key (mode 0600); NULL: none. */
    char *client_certificate;
    char *client_key;
};

/* cloud: which Microsoft cloud an account's tenant lives in (config_cloud()). */
enum ms_cloud {
    MS_CLOUD_GLOBAL,   /* the worldwide service */
    MS_CLOUD_USGOV,    /* US Government GCC High */
    MS_CLOUD_USGOVDOD, /* US Government DoD */
    MS_CLOUD_CHINA,    /* operated by 21Vianet */
};

/* A cloud's endpoints: what `cloud = NAME` resolves to unless token_url, upstream_host or scope
 * say otherwise (docs/configuration.md says where each comes from). */
struct ms_cloud_def {
    const char *name;            /* "global", "usgov", ... */
    const char *login_host;      /* Entra ID: token and device code endpoints */
    const char *smtp_host;       /* SMTP AUTH client submission (port 587) */
    const char *resource;        /* Exchange Online's resource: app-only scope RESOURCE/.default */
    const char *delegated_scope; /* grant = refresh_token */
    const char *graph_host;      /* Microsoft Graph (kept for a later issue) */
};
const struct ms_cloud_def *config_cloud(enum ms_cloud cloud);

enum sender_rewrite {
    SENDER_REWRITE_OFF,      /* MAIL FROM passed as the device sent it */
    SENDER_REWRITE_ENVELOPE, /* MAIL FROM becomes the account's mailbox */
    SENDER_REWRITE_HEADER,   /* also From: becomes the mailbox, the original kept as Reply-To */
};

/* upstream: how an account's messages leave (issue #12). */
enum upstream_kind {
    UPSTREAM_KIND_SMTP,  /* SMTP submission (XOAUTH2, a password or nothing): the default */
    UPSTREAM_KIND_GRAPH, /* Microsoft Graph sendMail over HTTPS (docs/graph.md) */
};

/* delivery: what the device's 250 means (issue #4, docs/spool.md). */
enum delivery_mode {
    DELIVERY_DIRECT_THEN_SPOOL, /* try the upstream while the device waits; on a temporary
                                 * failure commit to the spool and answer 250 (the default) */
    DELIVERY_DIRECT,            /* the device hears the upstream's verdict, command by command */
    DELIVERY_SPOOL,             /* 250 once the message is committed (fsynced) to the spool */
};

struct cfg_account {
    char *name;
    char *provider; /* "microsoft" | "google" | "oauth2" */
    /* "client_credentials" | "refresh_token" | "service_account"; resolved: google defaults to
     * service_account, the others to client_credentials. */
    char *grant;
    char *tenant; /* microsoft */
    char *client_id;
    char *client_secret_file;
    char *client_secret; /* loaded by config_load; wiped by config_free */
    /* Instead of client_secret_file: a PEM certificate and its private key (mode 0600). */
    char *client_certificate;
    char *client_key;
    char *mailbox; /* XOAUTH2 user= and the rewritten sender */
    enum sender_rewrite sender_rewrite;
    char *service_account_key; /* google: the service account's JSON key file (mode 0600) */
    char *issuer;              /* oauth2: token_url is discovered from it at start-up */
    /* refresh_token grant: where `authorize` starts the device code flow; resolved: explicit,
     * or microsoft's from tenant (NULL: only --refresh-token import works) */
    char *device_authorization_url;
    char *token_url; /* resolved: explicit, or the provider's default (NULL: from issuer) */
    char *scope;     /* resolved: explicit, or the provider's default (may be NULL) */
    struct cfg_upstream upstream; /* resolved: [upstream] defaults + upstream_* overrides */
    enum upstream_kind kind;      /* `upstream = smtp | graph` */
    enum ms_cloud cloud;          /* microsoft: picks the default endpoints below */
    const char *graph_host;       /* resolved from cloud (static) */
    /* graph: where requests go, without a trailing slash ("https://graph.microsoft.com");
     * resolved: explicit, or https://GRAPH_HOST of the cloud. NULL for smtp accounts. */
    char *graph_url;
    char *http_proxy; /* resolved: this account's, else [proxy]'s; NULL: none */
    enum delivery_mode delivery;
    /* messages per minute started upstream; 0: no limit. Resolved: explicit, or 30 for
     * microsoft over SMTP (Exchange Online's limit per mailbox), 0 for the others (graph too). */
    unsigned rate_limit;
    /* at once, per account; 0: no cap; default 3 (smtp). For graph: the requests in flight for
     * the mailbox, 1..4, default 4 (Graph's per-mailbox concurrency). */
    unsigned max_upstream_connections;
    char *bounce_to; /* NULL: bounces go to the envelope sender */
    int line;
    /* recipients a day the upstream may accept (docs/account-budget.md); 0: no limit. Resolved:
     * explicit, or 10000 for microsoft (Exchange Online's per mailbox), 0 for the others. */
    unsigned daily_recipient_limit;
};

/* require_fcrdns: forward-confirmed reverse DNS of the device's address (docs/recipient-policy.md)
 */
enum fcrdns_mode {
    FCRDNS_NO,       /* not checked (the default) */
    FCRDNS_EXTERNAL, /* on failure, recipients outside [proxy] allow_recipients are refused */
    FCRDNS_SESSION,  /* on failure, every MAIL of the session is refused */
};

struct cfg_device {
    char *name;
    struct cidr *addrs; /* empty: any address (then username is required) */
    size_t naddrs;
    char *username;      /* NULL: identified by address only */
    char *password_hash; /* crypt(3) hash, required with username */
    struct cfg_account *account;
    /* allow_recipients as written in this section (empty: not set) and the list that applies:
     * allow_own, or [proxy]'s (borrowed from struct config). Never NULL once loaded. */
    struct rcpt_policy allow_own;
    const struct rcpt_policy *allow_recipients;
    enum fcrdns_mode require_fcrdns;
    int line;
    /* docs/device-limits.md; resolved: this section's, else [proxy]'s; 0: none */
    unsigned max_messages_per_hour;
    unsigned max_recipients_per_day;
    unsigned block_after_refusals; /* spam refusals in 24 h that block the device */
};

struct config {
    char *path;
    /* [proxy] */
    struct cfg_endpoint *listen;
    size_t nlisten;
    struct cfg_endpoint *listen_tls;
    size_t nlisten_tls;
    /* who may send a PROXY protocol header (listeners flagged proxy_protocol) */
    struct cidr *trusted_proxies;
    size_t ntrusted_proxies;
    char *hostname;
    char *tls_cert;
    char *tls_key;
    int tls_min_version; /* OpenSSL's TLS1_VERSION .. TLS1_3_VERSION; default TLS1_2_VERSION */
    uint64_t max_message_size;
    unsigned max_recipients;
    unsigned max_connections;
    unsigned max_errors;             /* bad commands before the session is closed */
    unsigned max_connections_per_ip; /* from one address at once (server_listen.c) */
    unsigned auth_fail_limit;        /* failed AUTH from a source in 10 minutes: blocked */
    unsigned auth_block_time;        /* seconds a blocked source hears 421 */
    unsigned command_timeout;        /* seconds */
    unsigned data_timeout;           /* seconds */
    enum log_level log_level;
    char *state_dir;
    char *key_file; /* the token store's key (32 bytes); NULL: tokens are not persisted */
    enum bare_lf_policy bare_lf;
    char *control_socket; /* resolved: explicit, or STATE_DIR/control.sock */
    /* Prometheus /metrics and /healthz; host NULL: off */
    struct cfg_endpoint metrics_listen;
    /* `devices` marks a device stale after this long without a session (seconds) */
    unsigned stale_after;
    /* every HTTP request (tokens, discovery, device code) goes through this forward proxy,
     * http://HOST:PORT; NULL: none (the environment's https_proxy/no_proxy apply) */
    char *http_proxy;
    /* [upstream] */
    struct cfg_upstream upstream;
    unsigned upstream_connect_timeout; /* seconds */
    unsigned upstream_timeout;         /* seconds per reply */
    /* an authenticated upstream connection is kept this long for the next message; 0: never */
    unsigned upstream_idle_timeout; /* seconds */
    /* [proxy] max_queue_lifetime: a spooled message is bounced after this long (seconds) */
    unsigned max_queue_lifetime;
    /* threads that commit to the spool (its fsyncs) off the event loop; 0: on the loop. Read at
     * start-up only. */
    unsigned spool_commit_threads;
    /* direct-then-spool: a device waits at most this long for the upstream; then its message is
     * committed to the spool and it hears 250 (seconds) */
    unsigned direct_attempt_timeout;
    /* who a device may send to unless its own allow_recipients says otherwise; default "*"
     * (docs/recipient-policy.md) */
    struct rcpt_policy allow_recipients;
    /* the resolver's one name server (IP:port) instead of /etc/resolv.conf's; host NULL: those.
     * Read at start-up. */
    struct cfg_endpoint dns_server;
    /* [account NAME], [device NAME] in file order */
    struct cfg_account *accounts;
    size_t naccounts;
    struct cfg_device *devices;
    size_t ndevices;
    /* [proxy]: the devices' defaults for the same keys (docs/device-limits.md); 0: none */
    unsigned max_messages_per_hour;
    unsigned max_recipients_per_day;
    unsigned block_after_refusals;
};

/* Load and validate. On success the config; on failure NULL and *errors (malloc'd text, one
 * "FILE:LINE: message" per line, every problem found, not just the first). */
struct config *config_load(const char *path, char **errors);
void config_free(struct config *cfg);
struct cfg_account *config_account(const struct config *cfg, const char *name);
/* The rule for every URL the proxy fetches, configured or discovered (an issuer's endpoints):
 * https://HOST[:PORT][/PATH], or http:// to a loopback host only. 0 ok; -2 http:// to another
 * host; -1 not such a URL. */
int config_value_check_url(const char *url);
/* The upstream_auth value's name as in the file ("plain"). */
const char *config_upstream_auth_name(enum upstream_auth a);
/* 1 when the upstream authenticates with an OAuth token (xoauth2, oauthbearer or auto, and the
 * policy is not disabled): the account then needs a provider. */
int config_upstream_needs_token(const struct cfg_upstream *u);
/* 1 when it authenticates with upstream_username and the password (plain or login, and the
 * policy is not disabled). */
int config_upstream_needs_password(const struct cfg_upstream *u);

#endif
