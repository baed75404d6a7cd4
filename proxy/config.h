/* The config file (INI via libinih): load, validate everything, report every problem as
 * "FILE:LINE: message" with what would be valid. Names here are the user interface. */
#ifndef SOP_CONFIG_H
#define SOP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "proxy/cidr.h"
#include "proxy/smtp_data.h"

struct cfg_endpoint {
    char *host; /* "0.0.0.0", "::", "127.0.0.1", "*" (all); brackets of [v6] removed */
    char *port; /* numeric, 1..65535 */
    int line;
};

/* upstream_auth: the SASL mechanism used upstream. */
enum upstream_auth {
    UPSTREAM_AUTH_UNSET,       /* an account without upstream_auth: [upstream]'s applies */
    UPSTREAM_AUTH_AUTO,        /* XOAUTH2 if the EHLO offers it, else OAUTHBEARER */
    UPSTREAM_AUTH_XOAUTH2,     /* XOAUTH2 only */
    UPSTREAM_AUTH_OAUTHBEARER, /* OAUTHBEARER (RFC 7628) only */
};

struct cfg_upstream {
    char *host; /* DNS name (or IP literal, checked against the certificate's IP SAN) */
    uint16_t port;
    char *ca_file;           /* NULL: the system trust store */
    enum upstream_auth auth; /* never UNSET once loaded */
};

enum sender_rewrite {
    SENDER_REWRITE_OFF,      /* MAIL FROM passed as the device sent it */
    SENDER_REWRITE_ENVELOPE, /* MAIL FROM becomes the account's mailbox */
    SENDER_REWRITE_HEADER,   /* also From: becomes the mailbox, the original kept as Reply-To */
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
    enum delivery_mode delivery;
    /* messages per minute started upstream; 0: no limit. Resolved: explicit, or 30 for
     * microsoft (Exchange Online's limit per mailbox), 0 for the others. */
    unsigned rate_limit;
    unsigned max_upstream_connections; /* at once, per account; 0: no cap; default 3 */
    char *bounce_to;                   /* NULL: bounces go to the envelope sender */
    int line;
};

struct cfg_device {
    char *name;
    struct cidr *addrs; /* empty: any address (then username is required) */
    size_t naddrs;
    char *username;      /* NULL: identified by address only */
    char *password_hash; /* crypt(3) hash, required with username */
    struct cfg_account *account;
    int line;
};

struct config {
    char *path;
    /* [proxy] */
    struct cfg_endpoint *listen;
    size_t nlisten;
    struct cfg_endpoint *listen_tls;
    size_t nlisten_tls;
    char *hostname;
    char *tls_cert;
    char *tls_key;
    int tls_min_version; /* OpenSSL's TLS1_VERSION .. TLS1_3_VERSION; default TLS1_2_VERSION */
    uint64_t max_message_size;
    unsigned max_recipients;
    unsigned max_connections;
    unsigned max_errors;      /* bad commands before the session is closed */
    unsigned command_timeout; /* seconds */
    unsigned data_timeout;    /* seconds */
    enum log_level log_level;
    char *state_dir;
    char *key_file; /* the token store's key (32 bytes); NULL: tokens are not persisted */
    enum bare_lf_policy bare_lf;
    char *control_socket; /* resolved: explicit, or STATE_DIR/control.sock */
    /* Prometheus /metrics and /healthz; host NULL: off */
    struct cfg_endpoint metrics_listen;
    /* `devices` marks a device stale after this long without a session (seconds) */
    unsigned stale_after;
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
    /* [account NAME], [device NAME] in file order */
    struct cfg_account *accounts;
    size_t naccounts;
    struct cfg_device *devices;
    size_t ndevices;
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

#endif
