/* The refresh-token file `authorize --refresh-token FILE` imports: a bare token, or the JSON
 * that sasl-xoauth2 and scripts keep ({"access_token": ..., "refresh_token": ..., ...}). */
#ifndef SOP_CLI_RTFILE_H
#define SOP_CLI_RTFILE_H

#include <stddef.h>

/* From text (NUL-terminated): surrounding whitespace trimmed; a bare token must be one word of
 * printable characters; JSON must have a non-empty "refresh_token" string. 0 and *out
 * (secret_free) or -1 with err (never the file's content). */
int cli_refresh_token_parse(const char *text, char **out, char *err, size_t errlen);
/* Read path (refused if group/world readable, common/secret.h) and parse it as above; err
 * names path. */
int cli_refresh_token_read(const char *path, char **out, char *err, size_t errlen);

#endif
