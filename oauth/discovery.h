/* OpenID Connect discovery (OIDC Discovery 1.0, RFC 8414): an issuer's metadata document,
 * ISSUER/.well-known/openid-configuration, gives the token endpoint and the device authorization
 * endpoint. The proxy reads it once per account at start-up. The document comes from a peer:
 * its size and the time it may take are bounded, and every URL in it must pass the same rule as
 * a URL in the config. */
#ifndef SOP_DISCOVERY_H
#define SOP_DISCOVERY_H

#include <stddef.h>

#define DISCOVERY_MAX_BYTES (64 * 1024) /* a real document is 2-6 KiB */
#define DISCOVERY_TIMEOUT_MS 10000L

/* The rule a URL must pass (the config's, config_value_check_url): 0 ok; -2 http:// to a host
 * that is not loopback; -1 not an https:// (or loopback http://) URL. oauth/ does not know the
 * config, so the caller hands its rule in: one rule for configured and discovered URLs. */
typedef int (*discovery_url_check)(const char *url);

struct discovery_opts {
    long timeout_ms;           /* the whole fetch, connect included; 0: DISCOVERY_TIMEOUT_MS */
    size_t max_bytes;          /* the largest body taken; 0: DISCOVERY_MAX_BYTES */
    const char *ca_file;       /* for https://; NULL: the system trust store */
    discovery_url_check check; /* required */
    /* An HTTP forward proxy (http://HOST:PORT) for the fetch, loopback issuers included; NULL:
     * none (the environment's https_proxy/no_proxy apply, never to a loopback issuer). */
    const char *proxy;
};

/* What the proxy takes from the document. Strings are malloc'd; discovery_clear frees them. */
struct discovery {
    char *token_endpoint;
    char *device_authorization_endpoint; /* NULL: the document names none */
};

/* Pure: parse a metadata document (bytes in) for issuer. Its "issuer" must equal issuer exactly
 * (the mix-up defence), "token_endpoint" must be there, and every endpoint taken must pass
 * check. 0 ok (*out filled); -1 with err (peer text escaped). */
int discovery_parse(const char *issuer, const char *body, size_t len, discovery_url_check check,
                    struct discovery *out, char *err, size_t errlen);
/* Fetch ISSUER/.well-known/openid-configuration (one trailing '/' of issuer dropped first) and
 * parse it. Blocks for at most o->timeout_ms: start-up only, before the event loop serves
 * anyone. 0 ok; -1 with err ("URL: why" for the fetch, or discovery_parse's reason). */
int discovery_fetch(const char *issuer, const struct discovery_opts *o, struct discovery *out,
                    char *err, size_t errlen);
/* Free what out holds and zero it. Accepts NULL. */
void discovery_clear(struct discovery *d);

#endif
