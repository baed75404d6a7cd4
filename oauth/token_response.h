/* Pure parsing of a token endpoint's JSON answer (RFC 6749 5.1 / 5.2, Entra's AADSTS codes). */
#ifndef SOP_TOKEN_RESPONSE_H
#define SOP_TOKEN_RESPONSE_H

#include <stddef.h>

struct token_response {
    char *access_token;      /* secret_free */
    char *refresh_token;     /* secret_free; NULL if none */
    char *token_type;        /* "Bearer" */
    long expires_in;         /* seconds; 3600 if the IdP left it out */
    char *error;             /* e.g. "invalid_client"; printable ASCII only */
    char *error_description; /* cut to 300 chars, control characters removed */
    long aadsts; /* first code of Entra's "error_codes", or parsed from the description; 0 */
};

/*  1: a token (access_token non-empty, token_type Bearer if present, printable, no 0x01).
 *  0: the IdP said no (error fields set).
 * -1: the answer is not usable (not JSON, wrong shape, huge): message in err, never the body. */
int token_response_parse(const char *body, size_t len, long http_status, struct token_response *out,
                         char *err, size_t errlen);
void token_response_clear(struct token_response *r);
/* The code in an Entra error text ("AADSTS7000215: ..." -> 7000215); 0 if none (or s NULL). */
long token_response_aadsts(const char *s);

#endif
