/* libFuzzer target for store/spool_envelope.c, the parser of what a crash or a disk error may
 * have left in the spool. Whatever it accepts must be within the documented bounds, and the
 * format is canonical: formatting the parsed envelope gives back exactly the input bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/spool_envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_str(const char *s, size_t min, size_t max)
{
    size_t n;
    if (!s)
        abort();
    n = strlen(s);
    if (n < min || n > max)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct spool_envelope env;
    unsigned char *out = NULL;
    size_t outlen = 0;
    const char *err = NULL;

    if (spool_envelope_parse(data, size, &env, &err) != 0) {
        if (!err || env.account || env.rcpts)
            abort();
        return 0;
    }
    if (!spool_id_valid(env.queue_id) || env.nrcpts < 1 || env.nrcpts > SPOOL_MAX_RCPTS ||
        env.smtputf8 > 1 || env.eightbit > 1 || env.held > 1 || env.created < 0 ||
        env.next_attempt < 0)
        abort();
    fuzz_check_str(env.account, 1, SPOOL_NAME_MAX);
    fuzz_check_str(env.device, 0, SPOOL_NAME_MAX);
    fuzz_check_str(env.mail_from, 0, SPOOL_ADDR_MAX);
    fuzz_check_str(env.last_error, 0, SPOOL_ERROR_MAX);
    for (size_t i = 0; i < env.nrcpts; i++)
        fuzz_check_str(env.rcpts[i], 1, SPOOL_ADDR_MAX);
    if (spool_envelope_format(&env, &out, &outlen, &err) != 0 || outlen != size ||
        memcmp(out, data, size) != 0)
        abort();
    free(out);
    spool_envelope_clear(&env);
    return 0;
}
