/* libFuzzer target for oauth/discovery.c's discovery_parse, the OpenID Connect metadata document
 * an issuer serves. The first line of the input is the configured issuer, the rest the document,
 * exactly sized. URLs are checked by the config's own rule (config_value_check_url: https://, or
 * http:// to loopback only). What is accepted passes that rule, is https:// whenever the issuer
 * is, and names the issuer exactly; what is refused leaves the output untouched and says why
 * in printable ASCII (the peer's text is escaped). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oauth/discovery.h"
#include "proxy/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_url(const char *url, int https_only)
{
    if (!url || config_value_check_url(url) != 0)
        abort();
    if (https_only && strncasecmp(url, "https://", 8) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ilen = nl ? (size_t)(nl - data) : size;
    size_t blen = nl ? size - ilen - 1 : 0;
    char *issuer, *body, err[512];
    struct discovery d;
    int rc;

    issuer = malloc(ilen + 1);
    body = malloc(blen ? blen : 1); /* exactly sized: a read past the end is caught */
    if (!issuer || !body)
        abort();
    memcpy(issuer, data, ilen);
    issuer[ilen] = '\0';
    if (blen)
        memcpy(body, nl + 1, blen);
    memset(&d, 0, sizeof(d));
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    rc = discovery_parse(issuer, body, blen, config_value_check_url, &d, err, sizeof(err));
    if (rc == 0) {
        int https = strncasecmp(issuer, "https://", 8) == 0;
        fuzz_check_url(d.token_endpoint, https);
        if (d.device_authorization_endpoint)
            fuzz_check_url(d.device_authorization_endpoint, https);
    } else if (rc == -1) {
        if (d.token_endpoint || d.device_authorization_endpoint || !err[0] || err[0] == 'x')
            abort();
        for (const char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                abort();
    } else {
        abort();
    }
    discovery_clear(&d);
    if (d.token_endpoint || d.device_authorization_endpoint)
        abort();
    discovery_clear(NULL);
    free(body);
    free(issuer);
    return 0;
}
