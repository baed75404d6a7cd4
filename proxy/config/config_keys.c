/* The tables: every section and key of the config file, with its setter, default and limits.
 * These names are the user interface (docs/configuration.md describes them). */
#include "proxy/config/config_int.h"

#include <stddef.h>

#include <openssl/ssl.h>

/* config_value.c: [proxy] trusted_proxies, a list of addresses and CIDR blocks */
CONFIG_SETTER(config_value_set_trusted_proxies);

static const struct config_choice config_tls_versions[] = {{"1.0", TLS1_VERSION},
                                                           {"1.1", TLS1_1_VERSION},
                                                           {"1.2", TLS1_2_VERSION},
                                                           {"1.3", TLS1_3_VERSION},
                                                           {NULL, 0}};
static const struct config_choice config_log_levels[] = {
    {"error", LOGL_ERROR}, {"warn", LOGL_WARN},   {"warning", LOGL_WARN}, /* syslog's name */
    {"info", LOGL_INFO},   {"debug", LOGL_DEBUG}, {NULL, 0}};
static const struct config_choice config_bare_lf[] = {
    {"normalize", BARE_LF_NORMALIZE}, {"reject", BARE_LF_REJECT}, {NULL, 0}};
static const struct config_choice config_providers[] = {
    {"microsoft", 0}, {"google", 0}, {"oauth2", 0}, {NULL, 0}};
static const struct config_choice config_grants[] = {
    {"client_credentials", 0}, {"refresh_token", 0}, {"service_account", 0}, {NULL, 0}};
static const struct config_choice config_rewrites[] = {{"off", SENDER_REWRITE_OFF},
                                                       {"envelope", SENDER_REWRITE_ENVELOPE},
                                                       {"header", SENDER_REWRITE_HEADER},
                                                       {NULL, 0}};
static const struct config_choice config_deliveries[] = {
    {"direct-then-spool", DELIVERY_DIRECT_THEN_SPOOL},
    {"direct", DELIVERY_DIRECT},
    {"spool", DELIVERY_SPOOL},
    {NULL, 0}};
static const struct config_choice config_upstream_auths[] = {
    {"xoauth2", UPSTREAM_AUTH_XOAUTH2},
    {"oauthbearer", UPSTREAM_AUTH_OAUTHBEARER},
    {"auto", UPSTREAM_AUTH_AUTO},
    {"plain", UPSTREAM_AUTH_PLAIN},
    {"login", UPSTREAM_AUTH_LOGIN},
    {"none", UPSTREAM_AUTH_NONE},
    {NULL, 0}};
static const struct config_choice config_auth_policies[] = {{"required", UPSTREAM_POLICY_REQUIRED},
                                                            {"enabled", UPSTREAM_POLICY_ENABLED},
                                                            {"disabled", UPSTREAM_POLICY_DISABLED},
                                                            {NULL, 0}};
static const struct config_choice config_upstream_tls[] = {
    {"starttls", UPSTREAM_TLS_STARTTLS},
    {"implicit", UPSTREAM_TLS_IMPLICIT},
    {"opportunistic", UPSTREAM_TLS_OPPORTUNISTIC},
    {NULL, 0}};
static const struct config_choice config_clouds[] = {{"global", MS_CLOUD_GLOBAL},
                                                     {"usgov", MS_CLOUD_USGOV},
                                                     {"usgovdod", MS_CLOUD_USGOVDOD},
                                                     {"china", MS_CLOUD_CHINA},
                                                     {NULL, 0}};

static const struct config_choice config_upstream_kinds[] = {
    {"smtp", UPSTREAM_KIND_SMTP}, {"graph", UPSTREAM_KIND_GRAPH}, {NULL, 0}};

static const struct config_choice config_fcrdns[] = {{"no", FCRDNS_NO},
                                                     {"external", FCRDNS_EXTERNAL},
                                                     {"yes", FCRDNS_EXTERNAL},
                                                     {"session", FCRDNS_SESSION},
                                                     {NULL, 0}};

#define CF(f) offsetof(struct config, f)
#define AF(f) offsetof(struct cfg_account, f)
#define DF(f) offsetof(struct cfg_device, f)

static const struct config_key config_proxy_keys[] = {
    {"listen", config_value_set_listen, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IPv4:port, [IPv6]:port or *:port, optionally followed by proxy_protocol"},
    {"listen_tls", config_value_set_listen_tls, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IPv4:port, [IPv6]:port or *:port, optionally followed by proxy_protocol"},
    {"trusted_proxies", config_value_set_trusted_proxies, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IPv4 or IPv6 addresses or CIDR blocks, comma-separated"},
    {"hostname", config_value_set_dns_name, CF(hostname), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a DNS name"},
    {"tls_cert", config_secret_set_file, CF(tls_cert), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a readable PEM file"},
    {"tls_key", config_secret_set_key_file, CF(tls_key), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a PEM file of mode 0600"},
    {"tls_min_version", config_value_set_choice, CF(tls_min_version), "1.2", 0, 0,
     config_tls_versions, 0, NULL},
    {"max_message_size", config_value_set_size, CF(max_message_size), "35M", CONFIG_KIB,
     2 * CONFIG_GIB, NULL, 0, NULL},
    {"max_recipients", config_value_set_uint, CF(max_recipients), "500", 1, 10000, NULL, 0, NULL},
    {"max_connections", config_value_set_uint, CF(max_connections), "1000", 1, 100000, NULL, 0,
     NULL},
    {"max_errors", config_value_set_uint, CF(max_errors), "10", 1, 1000, NULL, 0, NULL},
    {"max_connections_per_ip", config_value_set_uint, CF(max_connections_per_ip), "20", 1, 100000,
     NULL, 0, NULL},
    {"auth_fail_limit", config_value_set_uint, CF(auth_fail_limit), "5", 1, 1000, NULL, 0, NULL},
    {"auth_block_time", config_value_set_duration, CF(auth_block_time), "15m", 1, 86400, NULL, 0,
     NULL},
    {"command_timeout", config_value_set_duration, CF(command_timeout), "300s", 1, 3600, NULL, 0,
     NULL},
    {"data_timeout", config_value_set_duration, CF(data_timeout), "600s", 1, 3600, NULL, 0, NULL},
    {"log_level", config_value_set_choice, CF(log_level), "info", 0, 0, config_log_levels, 0, NULL},
    {"state_dir", config_value_set_abs_path, CF(state_dir), "/var/lib/smtp-oauth-proxy", 0, 0, NULL,
     0, "an absolute path"},
    {"key_file", config_secret_set_store_key, CF(key_file), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a file of exactly 32 random bytes, mode 0600"},
    {"bare_lf", config_value_set_choice, CF(bare_lf), "normalize", 0, 0, config_bare_lf, 0, NULL},
    {"control_socket", config_value_set_abs_path, CF(control_socket), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "an absolute path (default STATE_DIR/control.sock)"},
    {"metrics_listen", config_value_set_endpoint, CF(metrics_listen), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "IPv4:port or [IPv6]:port (loopback or a management network)"},
    {"stale_after", config_value_set_duration, CF(stale_after), "365d", 1, 3650u * 86400u, NULL, 0,
     NULL},
    {"max_queue_lifetime", config_value_set_duration, CF(max_queue_lifetime), "5d", 60,
     30u * 86400u, NULL, 0, NULL},
    {"spool_commit_threads", config_value_set_uint, CF(spool_commit_threads), "4", 0, 64, NULL, 0,
     NULL},
    {"direct_attempt_timeout", config_value_set_duration, CF(direct_attempt_timeout), "50s", 1,
     3600, NULL, 0, NULL},
    {"http_proxy", config_value_set_proxy_url, CF(http_proxy), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "http://HOST:PORT"},
    {"allow_recipients", config_value_set_recipients, CF(allow_recipients), "*", 0, 0, NULL, 0,
     "@domain, @.domain, local@domain or *"},
    {"dns_server", config_value_set_endpoint, CF(dns_server), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "IPv4:port or [IPv6]:port (default: /etc/resolv.conf's name servers)"},
    /* the devices' defaults (docs/device-limits.md); 0: none */
    {"max_messages_per_hour", config_value_set_uint, CF(max_messages_per_hour), "0", 0, 1000000,
     NULL, 0, NULL},
    {"max_recipients_per_day", config_value_set_uint, CF(max_recipients_per_day), "0", 0, 10000000,
     NULL, 0, NULL},
    {"block_after_refusals", config_value_set_uint, CF(block_after_refusals), "0", 0, 1000, NULL, 0,
     NULL},
};

static const struct config_key config_upstream_keys[] = {
    {"host", config_value_set_host, CF(upstream.host), "smtp.office365.com", 0, 0, NULL, 0,
     "a DNS name or an IP address"},
    {"port", config_value_set_port, CF(upstream.port), "587", 1, 65535, NULL, 0, NULL},
    {"ca_file", config_secret_set_file, CF(upstream.ca_file), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a readable PEM file"},
    {"upstream_auth", config_value_set_choice, CF(upstream.auth), "auto", 0, 0,
     config_upstream_auths, 0, NULL},
    {"upstream_auth_policy", config_value_set_choice, CF(upstream.policy), "required", 0, 0,
     config_auth_policies, 0, NULL},
    {"upstream_tls", config_value_set_choice, CF(upstream.tls), "starttls", 0, 0,
     config_upstream_tls, 0, NULL},
    {"upstream_username", config_value_set_word, CF(upstream.username), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "a user name"},
    {"upstream_password_file", config_secret_set_password_file, CF(upstream.password_file), NULL, 0,
     0, NULL, KEY_EMPTY_OK, "a file of mode 0600 holding the password"},
    {"upstream_client_certificate", config_secret_set_file, CF(upstream.client_certificate), NULL,
     0, 0, NULL, KEY_EMPTY_OK, "a readable PEM certificate"},
    {"upstream_client_key", config_secret_set_key_file, CF(upstream.client_key), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "a PEM private key of mode 0600"},
    {"connect_timeout", config_value_set_duration, CF(upstream_connect_timeout), "30s", 1, 3600,
     NULL, 0, NULL},
    {"timeout", config_value_set_duration, CF(upstream_timeout), "300s", 1, 3600, NULL, 0, NULL},
    {"idle_timeout", config_value_set_duration, CF(upstream_idle_timeout), "30s", 0, 3600, NULL, 0,
     NULL},
};

static const struct config_key config_account_keys[] = {
    /* Required only when the upstream takes a token (config_check_account). */
    {"provider", config_value_set_choice_str, AF(provider), NULL, 0, 0, config_providers, 0, NULL},
    /* No default here: it depends on the provider (config_check_account). */
    {"grant", config_value_set_choice_str, AF(grant), NULL, 0, 0, config_grants, 0, NULL},
    {"tenant", config_value_set_dns_name, AF(tenant), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a tenant id or domain"},
    {"client_id", config_value_set_word, AF(client_id), NULL, 0, 0, NULL, 0,
     "the application (client) id"},
    {"client_secret_file", config_secret_set_secret_file, AF(client_secret_file), NULL, 0, 0, NULL,
     0, "a file of mode 0600"},
    {"client_certificate", config_secret_set_file, AF(client_certificate), NULL, 0, 0, NULL, 0,
     "a readable PEM certificate"},
    {"client_key", config_secret_set_key_file, AF(client_key), NULL, 0, 0, NULL, 0,
     "a PEM private key of mode 0600"},
    {"mailbox", config_value_set_mailbox, AF(mailbox), NULL, 0, 0, NULL, KEY_REQUIRED,
     "local@domain"},
    {"sender_rewrite", config_value_set_choice, AF(sender_rewrite), "off", 0, 0, config_rewrites, 0,
     NULL},
    {"token_url", config_value_set_url, AF(token_url), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "an https:// URL"},
    {"issuer", config_value_set_url, AF(issuer), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "an https:// URL (its /.well-known/openid-configuration names the token endpoint)"},
    {"device_authorization_url", config_value_set_url, AF(device_authorization_url), NULL, 0, 0,
     NULL, KEY_EMPTY_OK, "an https:// URL"},
    {"service_account_key", config_secret_set_key_file, AF(service_account_key), NULL, 0, 0, NULL,
     0, "a Google service account JSON key file of mode 0600"},
    {"scope", config_value_set_text, AF(scope), NULL, 0, 0, NULL, KEY_EMPTY_OK, "an OAuth2 scope"},
    {"upstream_host", config_value_set_host, AF(upstream.host), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a DNS name or an IP address"},
    {"upstream_port", config_value_set_port, AF(upstream.port), NULL, 1, 65535, NULL, 0, NULL},
    {"upstream_ca_file", config_secret_set_file, AF(upstream.ca_file), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "a readable PEM file"},
    {"upstream_auth", config_value_set_choice, AF(upstream.auth), NULL, 0, 0, config_upstream_auths,
     KEY_EMPTY_OK, NULL},
    {"upstream_auth_policy", config_value_set_choice, AF(upstream.policy), NULL, 0, 0,
     config_auth_policies, KEY_EMPTY_OK, NULL},
    {"upstream_tls", config_value_set_choice, AF(upstream.tls), NULL, 0, 0, config_upstream_tls,
     KEY_EMPTY_OK, NULL},
    {"upstream_username", config_value_set_word, AF(upstream.username), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "a user name"},
    {"upstream_password_file", config_secret_set_password_file, AF(upstream.password_file), NULL, 0,
     0, NULL, KEY_EMPTY_OK, "a file of mode 0600 holding the password"},
    {"upstream_client_certificate", config_secret_set_file, AF(upstream.client_certificate), NULL,
     0, 0, NULL, KEY_EMPTY_OK, "a readable PEM certificate"},
    {"upstream_client_key", config_secret_set_key_file, AF(upstream.client_key), NULL, 0, 0, NULL,
     KEY_EMPTY_OK, "a PEM private key of mode 0600"},
    {"cloud", config_value_set_choice, AF(cloud), "global", 0, 0, config_clouds, 0, NULL},
    {"upstream", config_value_set_choice, AF(kind), "smtp", 0, 0, config_upstream_kinds, 0, NULL},
    {"graph_url", config_value_set_url, AF(graph_url), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "an https:// URL (Microsoft Graph's root, e.g. https://graph.microsoft.com)"},
    {"http_proxy", config_value_set_proxy_url, AF(http_proxy), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "http://HOST:PORT"},
    {"delivery", config_value_set_choice, AF(delivery), "direct-then-spool", 0, 0,
     config_deliveries, 0, NULL},
    /* No default here: 30 for microsoft, none for the others (config_check_account). */
    {"rate_limit", config_value_set_uint, AF(rate_limit), NULL, 0, 100000, NULL, 0, NULL},
    /* No default here: 3 for smtp, 4 for graph (config_check_account). */
    {"max_upstream_connections", config_value_set_uint, AF(max_upstream_connections), NULL, 0, 1000,
     NULL, 0, NULL},
    {"bounce_to", config_value_set_mailbox, AF(bounce_to), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "local@domain (default: the envelope sender)"},
    /* No default here: 10000 for microsoft, none for the others (config_check_account). */
    {"daily_recipient_limit", config_value_set_uint, AF(daily_recipient_limit), NULL, 0, 10000000,
     NULL, 0, NULL},
};

static const struct config_key config_device_keys[] = {
    {"address", config_value_set_addresses, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IP addresses or CIDR blocks, comma-separated"},
    {"username", config_value_set_word, DF(username), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a login name"},
    {"password_hash", config_secret_set_password_hash, DF(password_hash), NULL, 0, 0, NULL, 0,
     "a crypt(3) hash"},
    {"account", config_value_set_account_ref, 0, NULL, 0, 0, NULL, KEY_REQUIRED,
     "the name of an [account NAME] section"},
    /* No default here: [proxy]'s applies (config_check_device). */
    {"allow_recipients", config_value_set_recipients, DF(allow_own), NULL, 0, 0, NULL, 0,
     "@domain, @.domain, local@domain or *"},
    {"require_fcrdns", config_value_set_choice, DF(require_fcrdns), "no", 0, 0, config_fcrdns, 0,
     NULL},
    /* No default here: [proxy]'s applies (config_check_device). */
    {"max_messages_per_hour", config_value_set_uint, DF(max_messages_per_hour), NULL, 0, 1000000,
     NULL, 0, NULL},
    {"max_recipients_per_day", config_value_set_uint, DF(max_recipients_per_day), NULL, 0, 10000000,
     NULL, 0, NULL},
    {"block_after_refusals", config_value_set_uint, DF(block_after_refusals), NULL, 0, 1000, NULL,
     0, NULL},
};

#define CONFIG_NKEYS(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(CONFIG_NKEYS(config_proxy_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");
_Static_assert(CONFIG_NKEYS(config_account_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");
_Static_assert(CONFIG_NKEYS(config_upstream_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");

const struct config_section_def config_keys_sections[] = {
    {"proxy", CONFIG_PROXY, 0, config_proxy_keys, CONFIG_NKEYS(config_proxy_keys)},
    {"upstream", CONFIG_UPSTREAM, 0, config_upstream_keys, CONFIG_NKEYS(config_upstream_keys)},
    {"account", CONFIG_ACCOUNT, 1, config_account_keys, CONFIG_NKEYS(config_account_keys)},
    {"device", CONFIG_DEVICE, 1, config_device_keys, CONFIG_NKEYS(config_device_keys)},
};
const size_t config_keys_nsections = CONFIG_NKEYS(config_keys_sections);
