/* queue_bounce with a real spool: a DSN from <> lands in the spool as a message of the same
 * account, to the sender or to bounce_to, only for the permanently refused recipients, quoting
 * the original's headers and the upstream's reply; none for a null sender or when nobody was
 * refused; an expired message's DSN says 4.4.7 and the last error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/deliver.h"
#include "proxy/smtp/dsn.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/server_gen.h"
#include "store/spool.h"

static char dir[] = "/tmp/test_queue_bounce.XXXXXX";

static struct {
    struct event_base *base;
    struct config cfg;
    struct cfg_account acct;
    struct server_gen gen;
    struct delivery_ctx ctx;
    struct queue *q;
} fx;

static const char original[] = "From: copier@example.org\r\nTo: a@example.org\r\n"
                               "Subject: scan 42\r\n\r\nsecret body text\r\n";

static int setup(void **state)
{
    char err[512] = "";
    (void)state;
    strcpy(dir, "/tmp/test_queue_bounce.XXXXXX");
    assert_non_null(mkdtemp(dir));
    log_set_level(LOGL_ERROR);
    memset(&fx, 0, sizeof(fx));
    fx.base = event_base_new();
    fx.acct.name = "scanners";
    fx.acct.mailbox = "scanner@example.org";
    fx.cfg.hostname = "proxy.example.org";
    fx.cfg.accounts = &fx.acct;
    fx.cfg.naccounts = 1;
    fx.gen.refs = 1;
    fx.gen.cfg = &fx.cfg;
    fx.ctx.base = fx.base;
    fx.q = queue_new(&fx.ctx, &fx.gen, dir, 0, err, sizeof(err));
    if (!fx.q)
        fail_msg("queue_new: %s", err);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    (void)state;
    queue_free(fx.q);
    event_base_free(fx.base);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static char *rcpts3[] = {"a@example.org", "b@example.org", "c@example.org"};

static void fill_env(struct spool_envelope *e, const char *from)
{
    memset(e, 0, sizeof(*e));
    strcpy(e->queue_id, "00112233aabbccdd");
    e->account = "scanners";
    e->device = "copier1";
    e->mail_from = (char *)(uintptr_t)from;
    e->rcpts = rcpts3;
    e->nrcpts = 3;
    e->created = (int64_t)time(NULL) - 100;
    e->attempts = 2;
}

/* a: 550 5.1.10 (refused), b: delivered, c: 451 (temporary) */
static struct txn_rcpt_result rr[3];
static struct txn_result res;

static void fill_res(void)
{
    memset(rr, 0, sizeof(rr));
    rr[0].status = TXN_PERM;
    strcpy(rr[0].reply, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found");
    rr[1].status = TXN_OK;
    strcpy(rr[1].reply, "250 2.1.5 Recipient OK");
    rr[2].status = TXN_TEMP;
    strcpy(rr[2].reply, "451 4.4.1 try later");
    memset(&res, 0, sizeof(res));
    res.status = TXN_TEMP;
    strcpy(res.reply, "250 2.0.0 OK queued");
    res.rcpts = rr;
    res.nrcpts = 3;
}

/* The one message queued (the DSN): its envelope and its whole body (malloc'd). */
static char *only_message(struct spool_envelope *env)
{
    char err[512] = "";
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    const char *id =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "id")->valuestring;
    assert_int_equal(spool_load_envelope(queue_spool(fx.q), id, env, err, sizeof(err)), 1);
    cJSON_Delete(list);
    struct spool_body *b = spool_body_open(queue_spool(fx.q), env, err, sizeof(err));
    assert_non_null(b);
    char *text = calloc(1, env->size + 1);
    size_t used = 0;
    ssize_t r;
    while ((r = spool_body_read(b, text + used, env->size + 1 - used, err, sizeof(err))) > 0)
        used += (size_t)r;
    assert_int_equal(r, 0); /* the end, and the hash matched */
    assert_int_equal(used, env->size);
    spool_body_free(b);
    size_t nrcpts = 0;
    assert_int_equal(dsn_check(text, used, &nrcpts, err, sizeof(err)), 0);
    return text;
}

static void test_refused_to_sender(void **state)
{
    struct spool_envelope env, dsn;
    char err[512] = "";
    (void)state;
    fill_env(&env, "copier@example.org");
    fill_res();
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_REFUSED, &res,
                                  "smtp.office365.com", original, sizeof(original) - 1, err,
                                  sizeof(err)),
                     1);
    char *text = only_message(&dsn);
    assert_string_equal(dsn.mail_from, "");
    assert_string_equal(dsn.account, "scanners");
    assert_int_equal(dsn.nrcpts, 1);
    assert_string_equal(dsn.rcpts[0], "copier@example.org");
    assert_int_equal(dsn.attempts, 0);
    /* only the refused recipient, with the upstream's status and words */
    assert_non_null(strstr(text, "Final-Recipient: rfc822; a@example.org"));
    assert_null(strstr(text, "Final-Recipient: rfc822; b@example.org"));
    assert_null(strstr(text, "Final-Recipient: rfc822; c@example.org"));
    assert_non_null(strstr(text, "Status: 5.1.10"));
    assert_non_null(strstr(text, "RecipientNotFound"));
    assert_non_null(strstr(text, "Remote-MTA: dns; smtp.office365.com"));
    assert_non_null(strstr(text, "X-Queue-ID: 00112233aabbccdd"));
    assert_non_null(strstr(text, "Subject: scan 42")); /* the original's headers */
    assert_null(strstr(text, "secret body text"));     /* never its body */
    assert_non_null(strstr(text, "MAILER-DAEMON@proxy.example.org"));
    free(text);
    spool_envelope_clear(&dsn);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.bounced, 1);
    assert_int_equal(st.messages, 1);
}

static void test_refused_to_bounce_to(void **state)
{
    struct spool_envelope env, dsn;
    char err[512] = "";
    (void)state;
    fx.acct.bounce_to = "it@example.org";
    fill_env(&env, "copier@example.org");
    fill_res();
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_REFUSED, &res, NULL, NULL, 0,
                                  err, sizeof(err)),
                     1);
    char *text = only_message(&dsn);
    assert_string_equal(dsn.rcpts[0], "it@example.org");
    assert_string_equal(dsn.mail_from, "");
    free(text);
    spool_envelope_clear(&dsn);
    fx.acct.bounce_to = NULL;
}

static void test_none_due(void **state)
{
    struct spool_envelope env;
    char err[512] = "";
    (void)state;
    /* a null sender is never bounced, not even to bounce_to */
    fx.acct.bounce_to = "it@example.org";
    fill_env(&env, "");
    fill_res();
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_REFUSED, &res, NULL, NULL, 0,
                                  err, sizeof(err)),
                     0);
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_EXPIRED, NULL, NULL, NULL, 0,
                                  err, sizeof(err)),
                     0);
    fx.acct.bounce_to = NULL;
    /* nobody refused permanently */
    fill_env(&env, "copier@example.org");
    fill_res();
    rr[0].status = TXN_TEMP;
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_REFUSED, &res, NULL, NULL, 0,
                                  err, sizeof(err)),
                     0);
    /* a result that does not match the envelope */
    res.nrcpts = 2;
    assert_int_equal(queue_bounce(fx.q, &fx.acct, &env, DSN_REASON_REFUSED, &res, NULL, NULL, 0,
                                  err, sizeof(err)),
                     -1);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 0);
    cJSON_Delete(list);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.bounced, 0);
}

static void test_expired(void **state)
{
    struct spool_envelope env, dsn;
    char err[512] = "";
    (void)state;
    fill_env(&env, "copier@example.org");
    env.last_error = "451 4.4.1 Upstream server unavailable (connect: refused)";
    assert_int_equal(queue_bounce(fx.q, NULL, &env, DSN_REASON_EXPIRED, NULL, NULL, original,
                                  sizeof(original) - 1, err, sizeof(err)),
                     1);
    char *text = only_message(&dsn);
    assert_string_equal(dsn.rcpts[0], "copier@example.org");
    for (size_t i = 0; i < 3; i++) {
        char want[80];
        snprintf(want, sizeof(want), "Final-Recipient: rfc822; %s", rcpts3[i]);
        assert_non_null(strstr(text, want));
    }
    assert_non_null(strstr(text, "Status: 4.4.7"));
    assert_non_null(strstr(text, "Diagnostic-Code: smtp; 451 4.4.1 Upstream server unavailable"));
    free(text);
    spool_envelope_clear(&dsn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_to_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_to_bounce_to, setup, teardown),
        cmocka_unit_test_setup_teardown(test_none_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
