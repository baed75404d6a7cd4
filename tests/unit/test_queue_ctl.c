/* The queue with a real spool in a mkdtemp state directory and no upstream (no pools: nothing is
 * ever attempted): list (oldest first, every field), hold / release (on disk before in memory,
 * surviving a restart), delete (gone from the spool), flush, ids refused, the figures, recovery
 * after a restart, expiry of a message past max_queue_lifetime (bounced to its sender), a
 * message of an unknown account kept until a reload brings the account back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/server_gen.h"
#include "store/spool.h"

static char dir[] = "/tmp/test_queue_ctl.XXXXXX";

struct fixture {
    struct event_base *base;
    struct config cfg;
    struct cfg_account acct;
    struct server_gen gen;
    struct delivery_ctx ctx;
    struct queue *q;
};

static struct fixture fx;

static struct queue *open_queue(void)
{
    char err[512] = "";
    struct queue *q = queue_new(&fx.ctx, &fx.gen, dir, 0, err, sizeof(err));
    if (!q)
        fail_msg("queue_new: %s", err);
    return q;
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/test_queue_ctl.XXXXXX");
    assert_non_null(mkdtemp(dir));
    log_set_level(LOGL_ERROR);
    memset(&fx, 0, sizeof(fx));
    fx.base = event_base_new();
    assert_non_null(fx.base);
    fx.acct.name = "scanners";
    fx.acct.mailbox = "scanner@example.org";
    fx.cfg.hostname = "proxy.example.org";
    fx.cfg.accounts = &fx.acct;
    fx.cfg.naccounts = 1;
    fx.gen.refs = 1;
    fx.gen.cfg = &fx.cfg;
    fx.ctx.base = fx.base;
    fx.q = open_queue();
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

/* Commit a message to the spool and submit it; its id into id. */
static void add(const char *account, const char *from, const char *rcpt, int64_t created,
                char id[SPOOL_ID_LEN + 1])
{
    char err[512] = "";
    char *rcpts[2] = {(char *)(uintptr_t)rcpt, "second@example.org"};
    struct spool_envelope env = {
        .account = (char *)(uintptr_t)account,
        .device = "copier1",
        .mail_from = (char *)(uintptr_t)from,
        .rcpts = rcpts,
        .nrcpts = 2,
        .created = created,
    };
    static const char body[] = "Subject: scan\r\nFrom: copier@example.org\r\n\r\nhello\r\n";
    struct spool_writer *w = spool_writer_new(queue_spool(fx.q), err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(spool_writer_write(w, body, sizeof(body) - 1, err, sizeof(err)), 0);
    assert_int_equal(spool_writer_commit(w, &env, err, sizeof(err)), 0);
    memcpy(id, env.queue_id, SPOOL_ID_LEN + 1);
    assert_int_equal(queue_submit(fx.q, &env), 0);
}

static cJSON *item(cJSON *list, int i)
{
    cJSON *o = cJSON_GetArrayItem(list, i);
    assert_non_null(o);
    return o;
}

static const char *str(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static double num(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static int on_disk(const char *id, struct spool_envelope *env)
{
    char err[512];
    return spool_load_envelope(queue_spool(fx.q), id, env, err, sizeof(err));
}

static void test_list_oldest_first(void **state)
{
    char a[17], b[17], c[17];
    int64_t now = (int64_t)time(NULL);
    (void)state;
    add("scanners", "copier@example.org", "x@example.org", now - 10, b);
    add("other", "", "y@example.org", now - 20, a); /* older, another account, null sender */
    add("scanners", "copier@example.org", "z@example.org", now - 5, c);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 3);
    assert_string_equal(str(item(list, 0), "id"), a);
    assert_string_equal(str(item(list, 1), "id"), b);
    assert_string_equal(str(item(list, 2), "id"), c);
    cJSON *o = item(list, 1);
    assert_string_equal(str(o, "account"), "scanners");
    assert_string_equal(str(o, "device"), "copier1");
    assert_string_equal(str(o, "from"), "copier@example.org");
    assert_string_equal(str(o, "state"), "queued");
    assert_string_equal(str(o, "last_error"), "");
    assert_true(num(o, "age") >= 10 && num(o, "age") < 60);
    assert_true(num(o, "size") > 0);
    assert_int_equal((int)num(o, "attempts"), 0);
    assert_int_equal((int)num(o, "nrcpts"), 2);
    cJSON *rc = cJSON_GetObjectItemCaseSensitive(o, "rcpts");
    assert_int_equal(cJSON_GetArraySize(rc), 2);
    assert_string_equal(cJSON_GetArrayItem(rc, 0)->valuestring, "x@example.org");
    assert_string_equal(str(item(list, 0), "from"), "");
    cJSON_Delete(list);

    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.messages, 3);
    assert_int_equal(st.held, 0);
    assert_int_equal(st.sending, 0);
    assert_int_equal(st.oldest_created, now - 20);
}

/* Created in the same second (the envelope has whole seconds, ids are random): arrival order. */
static void test_same_second_in_arrival_order(void **state)
{
    char ids[10][17];
    int64_t now = (int64_t)time(NULL);
    (void)state;
    for (int i = 0; i < 10; i++)
        add("scanners", "copier@example.org", "x@example.org", now, ids[i]);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 10);
    for (int i = 0; i < 10; i++)
        assert_string_equal(str(item(list, i), "id"), ids[i]);
    cJSON_Delete(list);
}

static void test_hold_release(void **state)
{
    char id[17], err[512];
    struct spool_envelope env;
    (void)state;
    add("scanners", "copier@example.org", "x@example.org", (int64_t)time(NULL), id);
    assert_true(queue_account_waiting(fx.q, "scanners"));
    assert_false(queue_account_waiting(fx.q, "nobody"));

    assert_int_equal(queue_hold(fx.q, id, err, sizeof(err)), 0);
    assert_int_equal(on_disk(id, &env), 1);
    assert_int_equal(env.held, 1);
    spool_envelope_clear(&env);
    cJSON *list = queue_list_json(fx.q);
    assert_string_equal(str(item(list, 0), "state"), "held");
    cJSON_Delete(list);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.held, 1);
    /* a held message does not make later ones wait */
    assert_false(queue_account_waiting(fx.q, "scanners"));
    /* flushing it is refused: it is held */
    assert_int_equal(queue_flush(fx.q, id, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "held"));
    /* holding twice is fine */
    assert_int_equal(queue_hold(fx.q, id, err, sizeof(err)), 0);
    queue_stats(fx.q, &st);
    assert_int_equal(st.held, 1);

    assert_int_equal(queue_release(fx.q, id, err, sizeof(err)), 0);
    assert_int_equal(on_disk(id, &env), 1);
    assert_int_equal(env.held, 0);
    spool_envelope_clear(&env);
    queue_stats(fx.q, &st);
    assert_int_equal(st.held, 0);
    assert_true(queue_account_waiting(fx.q, "scanners"));
    assert_int_equal(queue_flush(fx.q, id, err, sizeof(err)), 0);
    assert_int_equal(queue_flush(fx.q, NULL, err, sizeof(err)), 0);
}

static void test_delete(void **state)
{
    char a[17], b[17], err[512];
    struct spool_envelope env;
    (void)state;
    add("scanners", "copier@example.org", "x@example.org", (int64_t)time(NULL) - 2, a);
    add("scanners", "copier@example.org", "y@example.org", (int64_t)time(NULL), b);
    assert_int_equal(queue_delete(fx.q, a, err, sizeof(err)), 0);
    assert_int_equal(on_disk(a, &env), 0);
    assert_int_equal(on_disk(b, &env), 1);
    spool_envelope_clear(&env);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(str(item(list, 0), "id"), b);
    cJSON_Delete(list);
    /* gone: every verb says so */
    assert_int_equal(queue_delete(fx.q, a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no message"));
    assert_int_equal(queue_hold(fx.q, a, err, sizeof(err)), -1);
    assert_int_equal(queue_release(fx.q, a, err, sizeof(err)), -1);
    assert_int_equal(queue_flush(fx.q, a, err, sizeof(err)), -1);
}

static void test_bad_ids(void **state)
{
    static const char *const bad[] = {"",
                                      "0123456789abcdeF",
                                      "0123456789abcde",
                                      "0123456789abcdef0",
                                      "../../etc/passwd",
                                      "0123456789abcdeg"};
    char err[512];
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(queue_hold(fx.q, bad[i], err, sizeof(err)), -1);
        assert_non_null(strstr(err, "not a queue id"));
        assert_int_equal(queue_delete(fx.q, bad[i], err, sizeof(err)), -1);
        assert_int_equal(queue_release(fx.q, bad[i], err, sizeof(err)), -1);
        assert_int_equal(queue_flush(fx.q, bad[i], err, sizeof(err)), -1);
    }
}

/* A restart: a new queue on the same spool finds every committed message, held ones held. */
static void test_recover(void **state)
{
    char a[17], b[17], err[512] = "";
    int64_t now = (int64_t)time(NULL);
    (void)state;
    add("scanners", "copier@example.org", "x@example.org", now - 30, a);
    add("gone", "copier@example.org", "y@example.org", now - 20, b); /* no such account now */
    assert_int_equal(queue_hold(fx.q, a, err, sizeof(err)), 0);
    /* one process per spool */
    assert_null(queue_new(&fx.ctx, &fx.gen, dir, 0, err, sizeof(err)));
    queue_free(fx.q);

    fx.q = open_queue();
    assert_int_equal(queue_recover(fx.q, err, sizeof(err)), 0);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(str(item(list, 0), "id"), a);
    assert_string_equal(str(item(list, 0), "state"), "held");
    assert_string_equal(str(item(list, 1), "id"), b);
    assert_string_equal(str(item(list, 1), "state"), "queued");
    cJSON_Delete(list);
    /* the runs start (nothing to deliver to here); the message of an unknown account stays */
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.messages, 2);
    assert_int_equal(st.held, 1);
    assert_int_equal(st.oldest_created, now - 30);
}

/* Past max_queue_lifetime: bounced as expired (4.4.7) to the sender and removed; a null sender's
 * message is removed without a bounce. */
static void test_expired(void **state)
{
    char old[17], oldnull[17], young[17], err[512] = "";
    int64_t now = (int64_t)time(NULL);
    struct spool_envelope env;
    (void)state;
    fx.cfg.max_queue_lifetime = 3600;
    add("scanners", "copier@example.org", "x@example.org", now - 3601, old);
    add("scanners", "", "y@example.org", now - 3700, oldnull);
    add("scanners", "copier@example.org", "z@example.org", now - 60, young);
    assert_int_equal(queue_recover(fx.q, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    assert_int_equal(on_disk(old, &env), 0);
    assert_int_equal(on_disk(oldnull, &env), 0);
    assert_int_equal(on_disk(young, &env), 1);
    spool_envelope_clear(&env);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(str(item(list, 0), "id"), young);
    cJSON *dsn = item(list, 1);
    assert_string_equal(str(dsn, "from"), "");
    assert_string_equal(str(dsn, "account"), "scanners");
    assert_string_equal(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(dsn, "rcpts"), 0)->valuestring,
        "copier@example.org");
    cJSON_Delete(list);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.bounced, 1);
    fx.cfg.max_queue_lifetime = 0;
}

/* An expired message whose bounce cannot be written (spool/tmp gone: as with a full disk) is
 * kept, never removed without word; once the spool can take the bounce, it is bounced. */
static void test_expired_bounce_fails_kept(void **state)
{
    char old[17], err[512] = "", tmp[600], cmd[700];
    struct spool_envelope env;
    (void)state;
    fx.cfg.max_queue_lifetime = 3600;
    add("scanners", "copier@example.org", "x@example.org", (int64_t)time(NULL) - 3601, old);
    snprintf(tmp, sizeof(tmp), "%s/spool/tmp", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(queue_recover(fx.q, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    assert_int_equal(on_disk(old, &env), 1); /* still there: no bounce was made */
    spool_envelope_clear(&env);
    struct queue_stats st;
    queue_stats(fx.q, &st);
    assert_int_equal(st.messages, 1);
    assert_int_equal(st.bounced, 0);
    /* the disk is back: the next turn bounces it */
    assert_int_equal(mkdir(tmp, 0700), 0);
    assert_int_equal(queue_flush(fx.q, old, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    assert_int_equal(on_disk(old, &env), 0);
    queue_stats(fx.q, &st);
    assert_int_equal(st.bounced, 1);
    assert_int_equal(st.messages, 1); /* the bounce itself */
    fx.cfg.max_queue_lifetime = 0;
}

/* A message of an account no longer configured is kept (never expired or bounced for that);
 * once a reload brings the account back, its run looks again at once. */
static void test_no_account_kept_until_reload(void **state)
{
    char id[17], err[512] = "";
    struct spool_envelope env;
    struct cfg_account accts[2];
    (void)state;
    fx.cfg.max_queue_lifetime = 60;
    add("gone", "copier@example.org", "x@example.org", (int64_t)time(NULL) - 120, id);
    assert_int_equal(queue_recover(fx.q, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    assert_int_equal(on_disk(id, &env), 1);
    spool_envelope_clear(&env);

    accts[0] = fx.acct;
    memset(&accts[1], 0, sizeof(accts[1]));
    accts[1].name = "gone";
    fx.cfg.accounts = accts;
    fx.cfg.naccounts = 2;
    queue_reconfigured(fx.q, &fx.gen);
    for (int i = 0; i < 3; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    /* expired now that its account is known: bounced (a DSN of account "gone") and removed */
    assert_int_equal(on_disk(id, &env), 0);
    cJSON *list = queue_list_json(fx.q);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(str(item(list, 0), "from"), "");
    assert_string_equal(str(item(list, 0), "account"), "gone");
    cJSON_Delete(list);
    queue_reconfigured(NULL, NULL);
    fx.cfg.accounts = &fx.acct;
    fx.cfg.naccounts = 1;
    fx.cfg.max_queue_lifetime = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_second_in_arrival_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_bounce_fails_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_account_kept_until_reload, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
