/* The claims of a JWT access token, read WITHOUT verifying it: only to show an admin what the
 * IdP put in it (audience, roles, expiry). Nothing here may decide anything. */
#ifndef SOP_TOKEN_CLAIMS_H
#define SOP_TOKEN_CLAIMS_H

#include <cjson/cJSON.h>

/* The payload (second part) of a JWT as JSON, or NULL when token is not a JWT (an opaque token
 * like Google's, or anything malformed: not three base64url parts, not a JSON object). The
 * signature is never decoded. cJSON_Delete the result. */
cJSON *token_claims_decode(const char *token);

#endif
