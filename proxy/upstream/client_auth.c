/* AUTH XOAUTH2, OAUTHBEARER, PLAIN or LOGIN on an open upstream session: the only code that sees
 * the token or the password. The response is built here, sent by reference so that libevent's
 * copy is wiped, never logged, and wiped as soon as it is sent or dropped. */
#include "proxy/upstream/client_session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/smtp/sasl.h"

#define CLIENT_AUTH_LINE_MAX 512 /* whole AUTH line with CRLF (RFC 4954 4) */

void client_auth_wipe(struct client_session *c)
{
    secret_free(c->auth_resp);
    c->auth_resp = NULL;
    secret_free(c->auth_user);
    c->auth_user = NULL;
}

/* base64 of len bytes (no line breaks), in memory the caller frees with secret_free. */
static char *client_auth_b64(const unsigned char *in, size_t len)
{
    if (len > 4096)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd, here without an authorization identity. NULL when
 * user or password is empty, holds a NUL (impossible in a C string) or is too long. */
static char *client_auth_plain_encode(const char *user, const char *password)
{
    size_t ul = strlen(user), pl = strlen(password);
    if (ul == 0 || pl == 0 || ul > 1024 || pl > 1024)
        return NULL;
    size_t n = ul + pl + 2;
    unsigned char *raw = malloc(n);
    if (!raw)
        return NULL;
    raw[0] = '\0';
    memcpy(raw + 1, user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, password, pl);
    char *out = client_auth_b64(raw, n);
    OPENSSL_cleanse(raw, n);
    free(raw);
    return out;
}

static void client_auth_secret_cleanup(const void *data, size_t len, void *extra)
{
    (void)extra;
    OPENSSL_cleanse((void *)data, len);
    free((void *)data);
}

/* Queue prefix + secret + CRLF. The line is handed to libevent by reference so that the only
 * copy of the token is wiped as soon as libevent has passed it to OpenSSL, instead of lingering
 * in a freed evbuffer chain. */
static int client_auth_send_secret(struct client_session *c, const char *prefix, const char *secret,
                                   const char *logged)
{
    size_t plen = strlen(prefix), slen = strlen(secret);
    size_t len = plen + slen + 2;
    char *line = malloc(len);
    if (!line)
        return client_session_fail(c, "out of memory queueing AUTH");
    memcpy(line, prefix, plen);
    memcpy(line + plen, secret, slen);
    memcpy(line + plen + slen, "\r\n", 2);
    log_debug("event=upstream_send session=%s line=\"%s\"", c->log_id, logged);
    if (evbuffer_add_reference(bufferevent_get_output(c->bev), line, len,
                               client_auth_secret_cleanup, NULL) != 0) {
        client_auth_secret_cleanup(line, len, NULL);
        return client_session_fail(c, "out of memory queueing AUTH");
    }
    return 0;
}

int client_auth_on_reply(struct client_session *c, const struct smtp_reply *r)
{
    switch (c->state) {
    case CLIENT_SESSION_AUTH_CONT:
        if (r->code == 334 && c->auth_user) {
            /* AUTH LOGIN: the user name first (not secret; the password follows the next 334) */
            int rc = client_auth_send_secret(c, "", c->auth_user, "<user name>");
            secret_free(c->auth_user);
            c->auth_user = NULL;
            if (rc < 0)
                return -1;
            client_session_arm(c, c->reply_timeout);
            return 0;
        }
        if (r->code == 334) {
            int rc = client_auth_send_secret(c, "", c->auth_resp, "<redacted>");
            client_auth_wipe(c);
            if (rc < 0)
                return -1;
            client_session_enter_state(c, CLIENT_SESSION_AUTH_RESULT);
            client_session_arm(c, c->reply_timeout);
            return 0;
        }
        client_auth_wipe(c);
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_AUTH_RESULT:
        if (r->code == 334) {
            /* An error challenge (base64 JSON): an empty line (XOAUTH2) or a single ^A
             * (OAUTHBEARER, RFC 7628 3.2.3) ends the exchange and the server answers with the
             * real failure. PLAIN and LOGIN have nothing more to say: "*" cancels (RFC 4954). */
            const char *cancel = c->auth_mech == CLIENT_AUTH_OAUTHBEARER ? "AQ=="
                                 : c->auth_mech == CLIENT_AUTH_XOAUTH2   ? ""
                                                                         : "*";
            if (client_session_send(c, cancel, NULL) < 0)
                return -1;
            client_session_enter_state(c, CLIENT_SESSION_AUTH_ABORT);
            client_session_arm(c, c->reply_timeout);
            return 0;
        }
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_AUTH_ABORT:
        if (r->code == 334)
            return client_session_fail(c, "protocol violation: 334 after the AUTH exchange was "
                                          "cancelled");
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    default:
        return 0;
    }
}

const char *client_auth_mech_name(enum client_auth_mech mech)
{
    switch (mech) {
    case CLIENT_AUTH_OAUTHBEARER:
        return "OAUTHBEARER";
    case CLIENT_AUTH_PLAIN:
        return "PLAIN";
    case CLIENT_AUTH_LOGIN:
        return "LOGIN";
    default:
        return "XOAUTH2";
    }
}

void client_session_auth(struct client_session *c, enum client_auth_mech mech, const char *user,
                         const char *token, client_reply_cb cb, void *arg)
{
    if (!c)
        return;
    const char *name = client_auth_mech_name(mech);
    char prefix[32], logged[48];
    snprintf(prefix, sizeof(prefix), "AUTH %s ", name);
    snprintf(logged, sizeof(logged), "AUTH %s <redacted>", name);
    client_session_api_enter(c);
    if (!client_request_can_start(c, cb, arg))
        goto out;
    if (!c->ssl) {
        /* never a token or a password in plain text, whatever the caller decided */
        client_session_park_error(c, cb, arg,
                                  "refusing to send credentials on a connection without TLS");
        goto out;
    }
    char *resp = NULL;
    switch (mech) {
    case CLIENT_AUTH_OAUTHBEARER:
        resp = sasl_oauthbearer_encode(user ? user : "", c->host, c->port, token ? token : "");
        break;
    case CLIENT_AUTH_PLAIN:
        resp = client_auth_plain_encode(user ? user : "", token ? token : "");
        break;
    case CLIENT_AUTH_LOGIN:
        if (user && *user && token && *token && strlen(user) <= 1024 && strlen(token) <= 1024) {
            c->auth_user = client_auth_b64((const unsigned char *)user, strlen(user));
            resp =
                c->auth_user ? client_auth_b64((const unsigned char *)token, strlen(token)) : NULL;
        }
        break;
    default:
        resp = sasl_xoauth2_encode(user ? user : "", token ? token : "");
        break;
    }
    if (!resp) {
        char why[160];
        snprintf(why, sizeof(why),
                 mech == CLIENT_AUTH_PLAIN || mech == CLIENT_AUTH_LOGIN
                     ? "cannot build the %s response (empty or over-long user name or password)"
                     : "cannot build the %s response (empty user or token, or a byte outside "
                       "0x21..0x7e)",
                 name);
        client_auth_wipe(c);
        client_session_park_error(c, cb, arg, why);
        goto out;
    }
    c->auth_mech = mech;
    if (mech == CLIENT_AUTH_LOGIN) {
        /* no initial response: "AUTH LOGIN", then the user name and the password, each after
         * its 334 (the prompts' text is not relied on) */
        prefix[strlen(prefix) - 1] = '\0';
        c->auth_resp = resp;
        client_request_send(c, prefix, CLIENT_SESSION_AUTH_CONT, c->reply_timeout, cb, arg);
        goto out;
    }
    if (strlen(prefix) + strlen(resp) + 2 <= CLIENT_AUTH_LINE_MAX) {
        int rc = client_auth_send_secret(c, prefix, resp, logged);
        secret_free(resp);
        if (rc < 0) {
            /* The failure was reported to nobody (no request yet): give it to this one. */
            client_session_park_error(c, cb, arg, c->err);
            goto out;
        }
        client_request_wait(c, CLIENT_SESSION_AUTH_RESULT, c->reply_timeout, cb, arg);
    } else {
        /* RFC 4954 4: too long for the AUTH line; send it after the server's 334. */
        prefix[strlen(prefix) - 1] = '\0';
        c->auth_resp = resp;
        client_request_send(c, prefix, CLIENT_SESSION_AUTH_CONT, c->reply_timeout, cb, arg);
    }
out:
    client_session_api_leave(c);
}

void client_session_auth_xoauth2(struct client_session *c, const char *user, const char *token,
                                 client_reply_cb cb, void *arg)
{
    client_session_auth(c, CLIENT_AUTH_XOAUTH2, user, token, cb, arg);
}
