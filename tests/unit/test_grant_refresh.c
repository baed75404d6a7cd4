/* The refresh token grant under a real token cache, against a token endpoint played by an
 * in-process evhttp server that rotates refresh tokens the way Entra does. Proves: the form sent,
 * every rotated refresh token is persisted before any waiter hears of the access token, the next
 * request uses the rotated token, invalid_grant and "nothing stored" ask for a person (with the
 * command that fixes it), and no refresh token or access token reaches the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"
#include "oauth/token_cache.h"
#include "token_endpoint_fixture.h"

#define HINT "smtp-oauth-proxy --config /etc/sop.conf authorize scanner"
#define RT_PREFIX "0.AXoA-refresh-"
#define AT_PREFIX "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.access-"

enum idp_mode { IDP_ROTATE, IDP_KEEP, IDP_INVALID_GRANT, IDP_503, IDP_HANG };

struct idp {
    struct evhttp *http;
    enum idp_mode mode;
    int hits;
    int serial;
    char grant_type[64], client_id[64], refresh_token[128], scope[160], client_secret[64];
    int fields;
};

static void idp_handler(struct evhttp_request *req, void *arg)
{
    struct idp *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char body[2048];
    struct evkeyvalq q;
    struct evbuffer *out = evbuffer_new();

    assert_non_null(out);
    s->hits++;
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    s->fields = 0;
    s->grant_type[0] = s->client_id[0] = s->refresh_token[0] = s->scope[0] = '\0';
    s->client_secret[0] = '\0';
    assert_int_equal(evhttp_parse_query_str(body, &q), 0);
    for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        s->fields++;
        if (strcmp(kv->key, "grant_type") == 0)
            snprintf(s->grant_type, sizeof(s->grant_type), "%s", kv->value);
        else if (strcmp(kv->key, "client_id") == 0)
            snprintf(s->client_id, sizeof(s->client_id), "%s", kv->value);
        else if (strcmp(kv->key, "refresh_token") == 0)
            snprintf(s->refresh_token, sizeof(s->refresh_token), "%s", kv->value);
        else if (strcmp(kv->key, "scope") == 0)
            snprintf(s->scope, sizeof(s->scope), "%s", kv->value);
        else if (strcmp(kv->key, "client_secret") == 0)
            snprintf(s->client_secret, sizeof(s->client_secret), "%s", kv->value);
    }
    evhttp_clear_headers(&q);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    s->serial++;
    switch (s->mode) {
    case IDP_ROTATE:
        evbuffer_add_printf(
            out,
            "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"scope\":\"SMTP.Send\","
            "\"access_token\":\"" AT_PREFIX "%d\",\"refresh_token\":\"" RT_PREFIX "%d\"}",
            s->serial, s->serial + 1);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_KEEP:
        evbuffer_add_printf(out,
                            "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                            "\"access_token\":\"" AT_PREFIX "%d\"}",
                            s->serial);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_INVALID_GRANT:
        /* Entra echoes nothing of the token, but a careless IdP might: redacted either way. */
        evbuffer_add_printf(out,
                            "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS700082: "
                            "The refresh token has expired due to inactivity. token=%s\","
                            "\"error_codes\":[700082]}",
                            s->refresh_token);
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    case IDP_503:
        evbuffer_add_printf(out, "<html>busy</html>");
        evhttp_send_reply(req, 503, "Service Unavailable", out);
        break;
    case IDP_HANG:
        break; /* never answered: evhttp drops it when the client goes */
    }
    evbuffer_free(out);
}

/* A persistence fake that remembers what was saved, and whether a waiter had already heard of
 * the access token when the save ran. */
struct saved {
    int saves;
    char access[128], refresh[128];
    int waiter_heard_at_save;
    const char *stored_rt; /* what load hands out */
    const int *heard;
};

static int fp_load(void *arg, char **token, int64_t *exp, int64_t *life, char **refresh)
{
    struct saved *sv = arg;
    (void)token;
    (void)exp;
    (void)life;
    if (!sv->stored_rt)
        return 0;
    *refresh = secret_dup(sv->stored_rt);
    return 1;
}

static int fp_save(void *arg, const char *token, int64_t exp, int64_t life, const char *refresh)
{
    struct saved *sv = arg;
    (void)exp;
    (void)life;
    sv->saves++;
    snprintf(sv->access, sizeof(sv->access), "%s", token ? token : "(none)");
    if (refresh)
        snprintf(sv->refresh, sizeof(sv->refresh), "%s", refresh);
    sv->waiter_heard_at_save = sv->heard ? *sv->heard : -1;
    return 0;
}

struct fixture {
    struct event_base *base;
    struct idp idp;
    struct http *h;
    struct token_cache *c;
    struct saved sv;
    char url[128];
    struct log_capture lc;
};

struct waiter {
    int calls;
    char token[160];
    char err[1024];
};

static void waiter_cb(void *arg, const char *token, const char *err)
{
    struct waiter *w = arg;
    w->calls++;
    snprintf(w->token, sizeof(w->token), "%s", token ? token : "");
    snprintf(w->err, sizeof(w->err), "%s", err ? err : "");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->idp.http = token_endpoint_new(f->base, idp_handler, &f->idp, "/common/oauth2/v2.0/token",
                                     f->url, sizeof(f->url));
    f->h = http_new(f->base);
    assert_non_null(f->h);
    log_capture_start(&f->lc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char *captured = log_capture_stop(&f->lc);
    /* Nothing of any refresh or access token in the log, whatever happened. */
    assert_null(strstr(captured, RT_PREFIX));
    assert_null(strstr(captured, "access-"));
    assert_null(strstr(captured, "Conf1dential"));
    free(captured);
    token_cache_free(f->c);
    http_free(f->h);
    evhttp_free(f->idp.http);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* A cache over the refresh grant, with the fake store holding stored_rt (NULL: nothing). */
static void make_cache(struct fixture *f, const char *stored_rt, const char *secret)
{
    char err[256];
    struct oauth_client_cfg cfg = {.account = "scanner",
                                   .provider = "microsoft",
                                   .grant = "refresh_token",
                                   .token_url = f->url,
                                   .client_id = "33333333-4444-5555-6666-777777777777",
                                   .client_secret = secret,
                                   .scope = "https://outlook.office.com/SMTP.Send offline_access",
                                   .reauthorize_hint = HINT};
    struct provider *p = provider_new(&cfg, f->h, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(provider_uses_refresh_token(p), 1);
    f->c = token_cache_new(p, NULL);
    assert_non_null(f->c);
    f->sv.stored_rt = stored_rt;
    struct token_persist tp = {.load = fp_load, .save = fp_save, .arg = &f->sv};
    assert_int_equal(token_cache_set_persist(f->c, &tp), 0); /* no access token stored */
}

static void get(struct fixture *f, struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    f->sv.heard = &w->calls;
    if (token_cache_get(f->c, waiter_cb, w))
        run_until(f->base, &w->calls, 5000);
    assert_int_equal(w->calls, 1);
}

static void test_rotation_persisted_before_use(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    struct token_cache_stats st;

    make_cache(f, RT_PREFIX "1", NULL);
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 0);
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "1");
    /* the form, as the IdP decoded it: a public client sends no secret */
    assert_string_equal(f->idp.grant_type, "refresh_token");
    assert_string_equal(f->idp.client_id, "33333333-4444-5555-6666-777777777777");
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "1");
    assert_string_equal(f->idp.scope, "https://outlook.office.com/SMTP.Send offline_access");
    assert_int_equal(f->idp.fields, 4);
    /* the rotated refresh token was saved with the access token, before the waiter heard */
    assert_int_equal(f->sv.saves, 1);
    assert_string_equal(f->sv.refresh, RT_PREFIX "2");
    assert_string_equal(f->sv.access, AT_PREFIX "1");
    assert_int_equal(f->sv.waiter_heard_at_save, 0);

    /* the next request (the 535 path: the upstream refused the token) uses the rotated one */
    token_cache_invalidate(f->c, AT_PREFIX "1");
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "2");
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "2");
    assert_string_equal(f->sv.refresh, RT_PREFIX "3");
    assert_int_equal(f->sv.waiter_heard_at_save, 0);

    /* an IdP that keeps the refresh token: saved as "kept" (NULL), the old one still used */
    f->idp.mode = IDP_KEEP;
    token_cache_invalidate(f->c, AT_PREFIX "2");
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "3");
    assert_string_equal(f->sv.refresh, RT_PREFIX "3"); /* unchanged: NULL was passed */
    token_cache_invalidate(f->c, AT_PREFIX "3");
    get(f, &w);
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "3");
    token_cache_stats(f->c, &st);
    assert_int_equal(st.last_result, 1);
    assert_int_equal(st.reauthorize, 0);
}

static void test_confidential_client_sends_secret(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    make_cache(f, RT_PREFIX "1", "Conf1dential~secret");
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "1");
    assert_string_equal(f->idp.client_secret, "Conf1dential~secret");
    assert_int_equal(f->idp.fields, 5);
}

static void test_invalid_grant_needs_a_person(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    struct token_cache_stats st;
    char *log;

    make_cache(f, RT_PREFIX "1", NULL);
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "1");
    f->idp.mode = IDP_INVALID_GRANT;
    token_cache_invalidate(f->c, AT_PREFIX "1");
    get(f, &w);
    assert_string_equal(w.token, "");
    assert_non_null(strstr(w.err, "error=invalid_grant aadsts=700082"));
    assert_null(strstr(w.err, RT_PREFIX)); /* the echoed token was redacted */
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 1);
    assert_int_equal(st.last_result, 0);
    assert_non_null(strstr(st.last_error, "invalid_grant"));
    log = log_capture_text(&f->lc);
    assert_non_null(strstr(log, "event=reauthorize_needed account=scanner"));
    assert_non_null(strstr(log, "fix=\"" HINT "\""));
    free(log);

    /* a transient failure afterwards is not a person's problem; a success clears it all */
    token_cache_import_refresh_token(f->c, RT_PREFIX "new");
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 0);
    assert_string_equal(f->sv.refresh, RT_PREFIX "new");
    assert_string_equal(f->sv.access, "(none)");
    f->idp.mode = IDP_503;
    get(f, &w);
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 0);
    assert_int_equal(st.last_result, 0);
}

static void test_nothing_stored(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    struct token_cache_stats st;

    make_cache(f, NULL, NULL);
    /* known before anyone asks */
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 1);
    assert_int_equal(st.last_result, -1);
    get(f, &w);
    assert_int_equal(f->idp.hits, 0); /* nothing to send */
    assert_non_null(strstr(w.err, "no refresh token is stored"));
    assert_non_null(strstr(w.err, HINT));
    token_cache_stats(f->c, &st);
    assert_int_equal(st.reauthorize, 1);
    /* authorize hands one over: used at once, despite the backoff */
    assert_int_equal(token_cache_import_refresh_token(f->c, RT_PREFIX "7"), 0);
    assert_string_equal(f->sv.refresh, RT_PREFIX "7");
    get(f, &w);
    assert_string_equal(w.token, AT_PREFIX "1");
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "7");
}

/* authorize while a refresh with the old token is in flight: the old request is dropped (its
 * answer means nothing now) and the waiter hears the new grant's answer. */
static void test_import_during_refresh(void **state)
{
    struct fixture *f = *state;
    struct waiter w = {0};
    struct token_cache_stats st;

    make_cache(f, RT_PREFIX "old", NULL);
    f->idp.mode = IDP_HANG;
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    for (int i = 0; i < 200 && f->idp.hits == 0; i++)
        run_until(f->base, NULL, 10);
    assert_int_equal(f->idp.hits, 1);
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "old");
    f->idp.mode = IDP_ROTATE;
    assert_int_equal(token_cache_import_refresh_token(f->c, RT_PREFIX "new"), 0);
    run_until(f->base, &w.calls, 5000);
    assert_int_equal(w.calls, 1);
    assert_string_equal(f->idp.refresh_token, RT_PREFIX "new");
    assert_true(strncmp(w.token, AT_PREFIX, strlen(AT_PREFIX)) == 0);
    token_cache_stats(f->c, &st);
    assert_int_equal(st.last_result, 1);
    assert_int_equal(st.reauthorize, 0);
    assert_int_equal(st.refreshing, 0);
}

static void test_import_refused_for_other_grants(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct oauth_client_cfg cfg = {.account = "app",
                                   .provider = "microsoft",
                                   .grant = "client_credentials",
                                   .token_url = f->url,
                                   .client_id = "c",
                                   .client_secret = "s"};
    struct provider *p = provider_new(&cfg, f->h, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(provider_uses_refresh_token(p), 0);
    f->c = token_cache_new(p, NULL);
    assert_int_equal(token_cache_import_refresh_token(f->c, RT_PREFIX "1"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation_persisted_before_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_confidential_client_sends_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_grant_needs_a_person, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_during_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_refused_for_other_grants, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
