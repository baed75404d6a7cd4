/* The spool in a mkdtemp state directory: records round trip (null sender, 8-bit, empty and
 * multi-MB bodies in odd chunks), every truncation and every changed byte of a record refused,
 * hostile fields refused, startup recovery (tmp files, orphan bodies, envelopes without a body,
 * garbled envelopes), atomic state updates under kill -9, removal order, modes, fsync off, lock. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "store/spool.h"

#define CREATED INT64_C(1800000000)

static char dir[] = "/tmp/test_spool.XXXXXX";
static char state_dir[300], log_path[300];

/* ---- helpers ---- */

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static int saved_stderr = -1;

static void log_capture(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

static const char *log_release(void)
{
    static char buf[16384];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(log_path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/test_spool.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    log_set_level(LOGL_INFO);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static struct spool *open_spool(int do_fsync)
{
    char err[512] = "";
    struct spool *s = spool_new(state_dir, do_fsync, err, sizeof(err));
    if (!s)
        fail_msg("spool_new: %s", err);
    return s;
}

static char *rcpts2[] = {"a@example.org", "b@example.org"};

static void fill_env(struct spool_envelope *e, const char *from)
{
    memset(e, 0, sizeof(*e));
    e->account = "scanners";
    e->device = "copier1";
    e->mail_from = (char *)(uintptr_t)from;
    e->rcpts = rcpts2;
    e->nrcpts = 2;
    e->created = CREATED;
}

/* Commit body (len bytes) written in chunks cycling through sizes; env gets the id. */
static void commit(struct spool *s, struct spool_envelope *env, const unsigned char *body,
                   size_t len, const size_t *chunks, size_t nchunks)
{
    char err[512] = "";
    struct spool_writer *w = spool_writer_new(s, err, sizeof(err));
    size_t o = 0, c = 0;
    if (!w)
        fail_msg("spool_writer_new: %s", err);
    while (o < len) {
        size_t n = chunks ? chunks[c++ % nchunks] : len;
        if (n > len - o)
            n = len - o;
        if (spool_writer_write(w, body + o, n, err, sizeof(err)) != 0)
            fail_msg("spool_writer_write: %s", err);
        o += n;
    }
    if (spool_writer_commit(w, env, err, sizeof(err)) != 0)
        fail_msg("spool_writer_commit: %s", err);
    assert_true(spool_id_valid(env->queue_id));
}

/* Read the body back whole through spool_body_read (cap bytes at a time). 0 ok, -1 refused. */
static int read_body(struct spool *s, const struct spool_envelope *env, unsigned char **out,
                     size_t *outlen, size_t cap, char *err, size_t errlen)
{
    struct spool_body *b = spool_body_open(s, env, err, errlen);
    unsigned char *buf, *all = NULL;
    size_t n = 0;
    ssize_t r;
    if (!b)
        return -1;
    buf = malloc(cap);
    assert_non_null(buf);
    all = malloc(env->size + 1);
    assert_non_null(all);
    while ((r = spool_body_read(b, buf, cap, err, errlen)) > 0) {
        assert_true(n + (size_t)r <= env->size);
        memcpy(all + n, buf, (size_t)r);
        n += (size_t)r;
    }
    free(buf);
    spool_body_free(b);
    if (r < 0) {
        free(all);
        return -1;
    }
    *out = all;
    *outlen = n;
    return 0;
}

static void assert_mode(const char *path, mode_t want)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, want);
}

static size_t count_entries(const char *sub)
{
    char p[400];
    DIR *d;
    struct dirent *de;
    size_t n = 0;
    snprintf(p, sizeof(p), "%s/spool/%s", state_dir, sub);
    d = opendir(p);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void sub_path(char *buf, size_t len, const char *sub, const char *name)
{
    int n = snprintf(buf, len, "%s/spool/%s/%s", state_dir, sub, name);
    assert_true(n > 0 && (size_t)n < len);
}

static void truncate_to(const char *path, off_t len)
{
    assert_int_equal(truncate(path, len), 0);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(1 << 20);
    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void spit(const char *path, const unsigned char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/* ---- round trips ---- */

static void test_round_trip_and_modes(void **state)
{
    static const char body[] = "Subject: scan\r\n\r\nhello\r\n";
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    unsigned char *back = NULL;
    size_t backlen = 0;
    char err[512], p[400];
    (void)state;

    fill_env(&env, "scan@example.org");
    env.eightbit = 1;
    commit(s, &env, (const unsigned char *)body, strlen(body), NULL, 0);
    assert_int_equal(env.size, strlen(body));

    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_string_equal(got.queue_id, env.queue_id);
    assert_string_equal(got.account, "scanners");
    assert_string_equal(got.device, "copier1");
    assert_string_equal(got.mail_from, "scan@example.org");
    assert_int_equal(got.nrcpts, 2);
    assert_string_equal(got.rcpts[0], "a@example.org");
    assert_string_equal(got.rcpts[1], "b@example.org");
    assert_int_equal(got.smtputf8, 0);
    assert_int_equal(got.eightbit, 1);
    assert_int_equal(got.created, CREATED);
    assert_int_equal(got.size, strlen(body));
    assert_string_equal(got.body_sha256, env.body_sha256);
    assert_int_equal(got.attempts, 0);
    assert_int_equal(got.held, 0);
    assert_int_equal(read_body(s, &got, &back, &backlen, 5, err, sizeof(err)), 0);
    assert_int_equal(backlen, strlen(body));
    assert_memory_equal(back, body, backlen);
    free(back);

    /* modes: every directory 0700, every file 0600; nothing left in tmp/ */
    snprintf(p, sizeof(p), "%s/spool", state_dir);
    assert_mode(p, 0700);
    assert_mode(state_dir, 0700);
    sub_path(p, sizeof(p), "tmp", "");
    assert_mode(p, 0700);
    sub_path(p, sizeof(p), "queue", "");
    assert_mode(p, 0700);
    sub_path(p, sizeof(p), "corrupt", "");
    assert_mode(p, 0700);
    assert_non_null(spool_env_path(s, env.queue_id, p, sizeof(p)));
    assert_mode(p, 0600);
    assert_non_null(spool_body_path(s, env.queue_id, p, sizeof(p)));
    assert_mode(p, 0600);
    assert_int_equal(count_entries("tmp"), 0);
    assert_int_equal(count_entries("queue"), 2);
    spool_envelope_clear(&got);
    spool_free(s);
}

static void test_null_sender_8bit_utf8(void **state)
{
    unsigned char body[512];
    char *utf8_rcpt[] = {"j\xc3\xb6rg@b\xc3\xbc"
                         "ro.example"};
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    unsigned char *back = NULL;
    size_t backlen = 0;
    char err[512];
    (void)state;

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i * 7 + 128); /* every byte value, NUL and 0x80-0xff too */
    fill_env(&env, "");
    env.rcpts = utf8_rcpt;
    env.nrcpts = 1;
    env.smtputf8 = 1;
    env.eightbit = 1;
    commit(s, &env, body, sizeof(body), (const size_t[]){3}, 1);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_string_equal(got.mail_from, "");
    assert_string_equal(got.rcpts[0], utf8_rcpt[0]);
    assert_int_equal(got.smtputf8, 1);
    assert_int_equal(read_body(s, &got, &back, &backlen, 100, err, sizeof(err)), 0);
    assert_int_equal(backlen, sizeof(body));
    assert_memory_equal(back, body, sizeof(body));
    free(back);
    spool_envelope_clear(&got);
    spool_free(s);
}

static void test_empty_body(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    unsigned char *back = NULL;
    size_t backlen = 99;
    char err[512];
    (void)state;
    fill_env(&env, "x@example.org");
    commit(s, &env, (const unsigned char *)"", 0, NULL, 0);
    assert_int_equal(env.size, 0);
    /* SHA-256 of nothing */
    assert_string_equal(env.body_sha256,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_int_equal(read_body(s, &got, &back, &backlen, 10, err, sizeof(err)), 0);
    assert_int_equal(backlen, 0);
    free(back);
    spool_envelope_clear(&got);
    spool_free(s);
}

static void test_multi_mb_odd_chunks(void **state)
{
    const size_t len = 3 * 1024 * 1024 + 17;
    const size_t chunks[] = {1, 7, 4093, 65537, 2, 1000003};
    unsigned char *body = malloc(len), *back = NULL;
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    size_t backlen = 0;
    uint32_t x = 12345;
    char err[512];
    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        body[i] = (unsigned char)(x >> 16);
    }
    fill_env(&env, "big@example.org");
    commit(s, &env, body, len, chunks, sizeof(chunks) / sizeof(chunks[0]));
    assert_int_equal(env.size, len);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_int_equal(read_body(s, &got, &back, &backlen, 8191, err, sizeof(err)), 0);
    assert_int_equal(backlen, len);
    assert_memory_equal(back, body, len);
    free(back);
    free(body);
    spool_envelope_clear(&got);
    spool_free(s);
}

/* ---- reading a body back before the commit (direct-then-spool) ---- */

/* Drain reader b cap bytes at a time into out (room for max). Returns the last read's result
 * (0 the end and the hash matched, -1 refused) and the byte count in *n. */
static ssize_t drain_reader(struct spool_body *b, unsigned char *out, size_t max, size_t *n,
                            size_t cap, char *err, size_t errlen)
{
    unsigned char buf[8192];
    ssize_t r;
    *n = 0;
    assert_true(cap <= sizeof(buf));
    while ((r = spool_body_read(b, buf, cap, err, errlen)) > 0) {
        assert_true(*n + (size_t)r <= max);
        memcpy(out + *n, buf, (size_t)r);
        *n += (size_t)r;
    }
    return r;
}

static void test_writer_reader_round_trip_then_commit(void **state)
{
    const size_t len = 200000 + 3;
    unsigned char *body = malloc(len), *back = malloc(len), *again = NULL;
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    struct spool_body *b;
    size_t n = 0, againlen = 0;
    char err[512] = "";
    (void)state;
    assert_non_null(body);
    assert_non_null(back);
    for (size_t i = 0; i < len; i++)
        body[i] = (unsigned char)(i * 7 + 3);
    struct spool_writer *w = spool_writer_new(s, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(spool_writer_write(w, body, 100000, err, sizeof(err)), 0);
    assert_int_equal(spool_writer_write(w, body + 100000, len - 100000, err, sizeof(err)), 0);

    /* exactly the bytes written so far, in odd read sizes, hash checked at the end */
    b = spool_writer_reader(w, err, sizeof(err));
    if (!b)
        fail_msg("spool_writer_reader: %s", err);
    assert_true(spool_body_size(b) == len);
    assert_int_equal(drain_reader(b, back, len, &n, 4093, err, sizeof(err)), 0);
    assert_int_equal(n, len);
    assert_memory_equal(back, body, len);
    assert_int_equal(spool_body_read(b, back, 10, err, sizeof(err)), 0); /* stays at the end */
    spool_body_free(b);

    /* a second reader from the start: the writer's digest was not consumed */
    b = spool_writer_reader(w, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(drain_reader(b, back, len, &n, 8192, err, sizeof(err)), 0);
    assert_int_equal(n, len);
    spool_body_free(b);

    /* the writer still commits, with the same hash, and the committed body reads back */
    fill_env(&env, "scan@example.org");
    assert_int_equal(spool_writer_commit(w, &env, err, sizeof(err)), 0);
    assert_int_equal(env.size, len);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_int_equal(read_body(s, &got, &again, &againlen, 8191, err, sizeof(err)), 0);
    assert_int_equal(againlen, len);
    assert_memory_equal(again, body, len);
    assert_int_equal(count_entries("tmp"), 0);
    free(again);
    free(back);
    free(body);
    spool_envelope_clear(&got);
    spool_free(s);
}

static void test_writer_reader_empty_and_abort(void **state)
{
    struct spool *s = open_spool(0);
    unsigned char back[16];
    size_t n = 9;
    char err[512] = "";
    (void)state;
    struct spool_writer *w = spool_writer_new(s, err, sizeof(err));
    assert_non_null(w);
    struct spool_body *b = spool_writer_reader(w, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(drain_reader(b, back, sizeof(back), &n, 16, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    spool_body_free(b);
    spool_writer_abort(w);
    assert_int_equal(count_entries("tmp"), 0);
    spool_free(s);
}

static void test_writer_reader_detects_changed_file(void **state)
{
    static const char msg[] = "Subject: hi\r\n\r\nline one\r\nline two\r\n";
    const size_t len = sizeof(msg) - 1;
    struct spool *s = open_spool(0);
    unsigned char back[256];
    char err[512] = "", path[400], name[64];
    size_t n = 0;
    (void)state;

    /* a byte changed under the reader: the last read fails, before the caller sends "." */
    struct spool_writer *w = spool_writer_new(s, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(spool_writer_write(w, msg, len, err, sizeof(err)), 0);
    snprintf(name, sizeof(name), "%s.body", spool_writer_id(w));
    sub_path(path, sizeof(path), "tmp", name);
    struct spool_body *b = spool_writer_reader(w, err, sizeof(err));
    assert_non_null(b);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 20), 1);
    close(fd);
    err[0] = '\0';
    /* -2: damaged for good (not an I/O error that may pass) */
    assert_int_equal(drain_reader(b, back, sizeof(back), &n, 7, err, sizeof(err)), -2);
    assert_int_equal(n, len); /* every byte was handed out: only the hash tells */
    assert_true(contains(err, "checksum mismatch"));
    assert_int_equal(spool_body_read(b, back, 7, err, sizeof(err)), -2); /* stays an error */
    spool_body_free(b);

    /* truncated under the reader: refused when it runs short */
    b = spool_writer_reader(w, err, sizeof(err));
    assert_non_null(b);
    truncate_to(path, 10);
    assert_int_equal(drain_reader(b, back, sizeof(back), &n, 7, err, sizeof(err)), -2);
    assert_true(contains(err, "shorter"));
    spool_body_free(b);

    /* already shorter than the writer says when the reader is made: refused at once */
    assert_null(spool_writer_reader(w, err, sizeof(err)));
    assert_true(contains(err, "truncated"));
    spool_writer_abort(w);
    spool_free(s);
}

static void test_fsync_off(void **state)
{
    struct spool *s = open_spool(0);
    struct spool_envelope env, *list = NULL;
    size_t n = 0;
    char err[512];
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)"x\r\n", 3, NULL, 0);
    assert_int_equal(spool_scan(s, &list, &n, NULL, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].queue_id, env.queue_id);
    spool_list_free(list, n);
    assert_int_equal(spool_remove(s, env.queue_id, err, sizeof(err)), 0);
    assert_int_equal(count_entries("queue"), 0);
    spool_free(s);
}

static void test_lock(void **state)
{
    struct spool *s = open_spool(1), *t;
    char err[512] = "";
    (void)state;
    t = spool_new(state_dir, 1, err, sizeof(err));
    assert_null(t);
    assert_true(contains(err, "in use by another process"));
    spool_free(s);
    t = open_spool(1);
    spool_free(t);
}

static void test_abort_and_bad_envelope_leave_nothing(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope env;
    struct spool_writer *w;
    char err[512] = "";
    (void)state;
    w = spool_writer_new(s, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(strlen(spool_writer_id(w)), SPOOL_ID_LEN);
    assert_int_equal(spool_writer_write(w, "abc", 3, err, sizeof(err)), 0);
    assert_int_equal(count_entries("tmp"), 1);
    spool_writer_abort(w);
    assert_int_equal(count_entries("tmp"), 0);

    w = spool_writer_new(s, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(spool_writer_write(w, "abc", 3, err, sizeof(err)), 0);
    fill_env(&env, "a@example.org");
    env.nrcpts = 0; /* no recipient: refused before anything is committed */
    assert_int_equal(spool_writer_commit(w, &env, err, sizeof(err)), -1);
    assert_true(contains(err, "recipient"));
    assert_int_equal(count_entries("tmp"), 0);
    assert_int_equal(count_entries("queue"), 0);
    spool_free(s);
}

/* ---- the record: truncation, changed bytes, hostile fields ---- */

static unsigned char *small_record(size_t *len)
{
    struct spool_envelope env;
    unsigned char *rec = NULL;
    const char *why = NULL;
    fill_env(&env, "scan@example.org");
    memcpy(env.queue_id, "0123456789abcdef", SPOOL_ID_LEN + 1);
    memset(env.body_sha256, 'a', SPOOL_SHA256_HEX);
    env.size = 42;
    env.attempts = 2;
    env.next_attempt = CREATED + 60;
    env.last_error = "451 4.7.0 try later";
    assert_int_equal(spool_envelope_format(&env, &rec, len, &why), 0);
    return rec;
}

static void test_record_truncated_at_every_offset(void **state)
{
    size_t len = 0;
    unsigned char *rec = small_record(&len);
    struct spool_envelope env;
    const char *why = NULL;
    (void)state;
    assert_int_equal(spool_envelope_parse(rec, len, &env, &why), 0);
    assert_int_equal(env.attempts, 2);
    assert_string_equal(env.last_error, "451 4.7.0 try later");
    spool_envelope_clear(&env);
    for (size_t i = 0; i < len; i++) {
        why = NULL;
        if (spool_envelope_parse(rec, i, &env, &why) != -1)
            fail_msg("a record cut at %zu of %zu was accepted", i, len);
        assert_non_null(why);
        assert_null(env.account); /* nothing half-filled */
    }
    free(rec);
}

static void test_record_every_byte_changed(void **state)
{
    size_t len = 0;
    unsigned char *rec = small_record(&len);
    struct spool_envelope env;
    const char *why = NULL;
    (void)state;
    for (size_t i = 0; i < len; i++) {
        unsigned char saved = rec[i];
        rec[i] ^= 0x01;
        if (spool_envelope_parse(rec, len, &env, &why) != -1)
            fail_msg("a record with byte %zu changed was accepted", i);
        rec[i] = saved;
    }
    /* and extra bytes after the end marker */
    unsigned char *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, rec, len);
    longer[len] = '\n';
    assert_int_equal(spool_envelope_parse(longer, len + 1, &env, &why), -1);
    free(longer);
    free(rec);
}

/* body text + a correct end line: hostile records that pass the checksum. */
static int parse_sealed(const char *text, const char **why)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char line[128];
    struct spool_envelope env;
    size_t tl = strlen(text);
    unsigned char *buf = malloc(tl + sizeof(line));
    int r;
    assert_non_null(buf);
    assert_int_equal(EVP_Digest(text, tl, md, &mdlen, EVP_sha256(), NULL), 1);
    memcpy(buf, text, tl);
    size_t o = tl;
    o += (size_t)snprintf((char *)buf + o, sizeof(line), "end 64:");
    for (unsigned i = 0; i < 32; i++)
        o += (size_t)snprintf((char *)buf + o, 3, "%02x", md[i]);
    buf[o++] = '\n';
    r = spool_envelope_parse(buf, o, &env, why);
    if (r == 0)
        spool_envelope_clear(&env);
    free(buf);
    return r;
}

#define HDR "sop-spool 1\nid 16:0123456789abcdef\n"
#define TAIL_NO_HELD                                                                               \
    "smtputf8 1:0\n8bitmime 1:0\ncreated 10:1800000000\nsize 1:5\nbody_sha256 64:"                 \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nattempts 1:0\n"             \
    "next_attempt 1:0\nlast_error 0:\n"
#define TAIL TAIL_NO_HELD "held 1:0\n"

static void test_hostile_fields_rejected(void **state)
{
    const char *why = NULL;
    char *big;
    size_t o;
    (void)state;
    /* the well-formed baseline passes */
    assert_int_equal(parse_sealed(HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL, &why),
                     0);
    const char *bad[] = {
        "sop-spool 2\nid 16:0123456789abcdef\naccount 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL,
        HDR "account 0:\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL,      /* empty account */
        HDR "account 1:a\ndevice 0:\nfrom 0:\n" TAIL,                 /* no recipient */
        HDR "account 1:a\ndevice 0:\nfrom 3:a\nb\nrcpt 3:a@b\n" TAIL, /* LF in a value */
        HDR "account 1:a\ndevice 0:\nfrom 3:a\rb\nrcpt 3:a@b\n" TAIL, /* CR in a value */
        HDR "account 1:a\ndevice 0:\nfrom 3:a\001b\nrcpt 3:a@b\n" TAIL,
        HDR "account 01:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL, /* leading zero */
        HDR "account 1:a\ndevice 0:\nfrom 99999999:\nrcpt 3:a@b\n" TAIL,
        HDR "device 0:\naccount 1:a\nfrom 0:\nrcpt 3:a@b\n" TAIL, /* order */
        HDR "account 1:a\naccount 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL,
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\nunknown 1:x\n" TAIL,
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\nsmtputf8 1:2\n", /* flag not 0|1 */
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\nsmtputf8 1:0\n8bitmime 1:0\n"
            "created 20:99999999999999999999\n",              /* overflow */
        "sop-spool 1\nid 16:0123456789ABCDEF\naccount 1:a\n", /* upper-case id */
        /* a 0|1 flag of 2..9 in an otherwise whole record (fuzz_spool_envelope) */
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\nsmtputf8 1:2\n8bitmime 1:0\n"
            "created 10:1800000000\nsize 1:5\nbody_sha256 64:"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nattempts 1:0\n"
            "next_attempt 1:0\nlast_error 0:\nheld 1:0\n",
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\nsmtputf8 1:0\n8bitmime 1:9\n"
            "created 10:1800000000\nsize 1:5\nbody_sha256 64:"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nattempts 1:0\n"
            "next_attempt 1:0\nlast_error 0:\nheld 1:0\n",
        HDR "account 1:a\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL_NO_HELD "held 1:2\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse_sealed(bad[i], &why) != -1)
            fail_msg("hostile record %zu accepted", i);

    /* an account of SPOOL_NAME_MAX + 1 bytes; SPOOL_MAX_RCPTS + 1 recipients */
    big = malloc(SPOOL_ENVELOPE_MAX + 4096);
    assert_non_null(big);
    o = (size_t)sprintf(big, HDR "account %d:", SPOOL_NAME_MAX + 1);
    memset(big + o, 'a', SPOOL_NAME_MAX + 1);
    o += SPOOL_NAME_MAX + 1;
    sprintf(big + o, "\ndevice 0:\nfrom 0:\nrcpt 3:a@b\n" TAIL);
    assert_int_equal(parse_sealed(big, &why), -1);
    o = (size_t)sprintf(big, HDR "account 1:a\ndevice 0:\nfrom 0:\n");
    for (int i = 0; i < SPOOL_MAX_RCPTS + 1; i++)
        o += (size_t)sprintf(big + o, "rcpt 3:a@b\n");
    sprintf(big + o, TAIL);
    assert_int_equal(parse_sealed(big, &why), -1);
    assert_string_equal(why, "too many recipients");
    free(big);

    /* the formatter refuses what the parser would */
    struct spool_envelope env;
    unsigned char *rec = NULL;
    size_t len = 0;
    char *nl_rcpt[] = {"a@b\r\nRSET"};
    char longerr[SPOOL_ERROR_MAX + 2];
    fill_env(&env, "a@b");
    memcpy(env.queue_id, "0123456789abcdef", SPOOL_ID_LEN + 1);
    memset(env.body_sha256, 'a', SPOOL_SHA256_HEX);
    env.rcpts = nl_rcpt;
    env.nrcpts = 1;
    assert_int_equal(spool_envelope_format(&env, &rec, &len, &why), -1);
    fill_env(&env, "a@b");
    memcpy(env.queue_id, "0123456789abcdef", SPOOL_ID_LEN + 1);
    memset(env.body_sha256, 'a', SPOOL_SHA256_HEX);
    env.account = "";
    assert_int_equal(spool_envelope_format(&env, &rec, &len, &why), -1);
    env.account = "scanners";
    memset(longerr, 'e', sizeof(longerr) - 1);
    longerr[sizeof(longerr) - 1] = '\0';
    env.last_error = longerr;
    assert_int_equal(spool_envelope_format(&env, &rec, &len, &why), -1);
    env.last_error = NULL;
    assert_int_equal(spool_envelope_format(&env, &rec, &len, &why), 0);
    free(rec);
}

/* ---- on disk: truncated envelope and body files ---- */

static void test_envelope_file_truncated_rejected(void **state)
{
    struct spool *s = open_spool(0);
    struct spool_envelope env, got;
    unsigned char *rec;
    size_t len = 0;
    char p[400], err[1024];
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)"hi\r\n", 4, NULL, 0);
    assert_non_null(spool_env_path(s, env.queue_id, p, sizeof(p)));
    rec = slurp(p, &len);
    for (size_t i = 0; i < len; i++) {
        spit(p, rec, i);
        err[0] = '\0';
        assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
        assert_null(got.account);
    }
    spit(p, rec, len);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    spool_envelope_clear(&got);
    free(rec);
    spool_free(s);
}

static void test_body_truncated_or_garbled_rejected(void **state)
{
    static const char body[] = "Subject: t\r\n\r\nbody bytes\r\n";
    struct spool *s = open_spool(0);
    struct spool_envelope env;
    unsigned char *file, *back = NULL;
    size_t len = 0, backlen = 0;
    char p[400], err[1024];
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)body, strlen(body), NULL, 0);
    assert_non_null(spool_body_path(s, env.queue_id, p, sizeof(p)));
    file = slurp(p, &len);
    assert_int_equal(len, strlen(body) + SPOOL_TRAILER_LEN);
    for (size_t i = 0; i < len; i++) {
        truncate_to(p, (off_t)i);
        err[0] = '\0';
        assert_int_equal(read_body(s, &env, &back, &backlen, 4, err, sizeof(err)), -1);
        assert_true(contains(err, "truncated"));
    }
    /* every changed byte: in the body the hash catches it at the end, in the trailer the open */
    for (size_t i = 0; i < len; i++) {
        file[i] ^= 0x20;
        spit(p, file, len);
        err[0] = '\0';
        assert_int_equal(read_body(s, &env, &back, &backlen, 4, err, sizeof(err)), -1);
        assert_true(contains(err, "garbled"));
        file[i] ^= 0x20;
    }
    spit(p, file, len);
    assert_int_equal(read_body(s, &env, &back, &backlen, 4, err, sizeof(err)), 0);
    free(back);
    free(file);
    spool_free(s);
}

/* ---- startup recovery ---- */

static void test_scan_recovers_orders_and_cleans(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope e1, e2, e3, *list = NULL;
    struct spool_scan_stats st;
    size_t n = 0;
    char p[400], err[512];
    (void)state;
    fill_env(&e1, "one@example.org");
    e1.created = CREATED + 300;
    commit(s, &e1, (const unsigned char *)"1", 1, NULL, 0);
    fill_env(&e2, "two@example.org");
    e2.created = CREATED + 100;
    commit(s, &e2, (const unsigned char *)"2", 1, NULL, 0);
    fill_env(&e3, "three@example.org");
    e3.created = CREATED + 200;
    commit(s, &e3, (const unsigned char *)"3", 1, NULL, 0);
    /* a write in progress at the crash */
    sub_path(p, sizeof(p), "tmp", "0000000000000000.body");
    spit(p, (const unsigned char *)"partial", 7);
    spool_free(s);

    s = open_spool(1);
    log_capture();
    int r = spool_scan(s, &list, &n, &st, err, sizeof(err));
    const char *log = log_release();
    assert_int_equal(r, 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].queue_id, e2.queue_id);
    assert_string_equal(list[1].queue_id, e3.queue_id);
    assert_string_equal(list[2].queue_id, e1.queue_id);
    assert_string_equal(list[0].mail_from, "two@example.org");
    assert_int_equal(st.committed, 3);
    assert_int_equal(st.tmp_removed, 1);
    assert_int_equal(st.orphans, 0);
    assert_int_equal(st.quarantined, 0);
    assert_true(contains(log, "event=spool_scanned queued=3 tmp_removed=1"));
    assert_int_equal(count_entries("tmp"), 0);
    spool_list_free(list, n);
    spool_free(s);
}

static void test_scan_orphan_body_removed(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope env, *list = NULL;
    struct spool_scan_stats st;
    size_t n = 0;
    char p[400], err[512], want[128];
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)"x", 1, NULL, 0);
    assert_non_null(spool_env_path(s, env.queue_id, p, sizeof(p)));
    assert_int_equal(unlink(p), 0); /* a commit cut before its envelope */
    log_capture();
    int r = spool_scan(s, &list, &n, &st, err, sizeof(err));
    const char *log = log_release();
    assert_int_equal(r, 0);
    assert_int_equal(n, 0);
    assert_int_equal(st.orphans, 1);
    snprintf(want, sizeof(want), "event=spool_orphan_removed queue_id=%s", env.queue_id);
    assert_true(contains(log, want));
    assert_int_equal(count_entries("queue"), 0);
    spool_list_free(list, n);
    spool_free(s);
}

static void test_scan_envelope_without_body_quarantined(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope a, b, good, *list = NULL;
    struct spool_scan_stats st;
    size_t n = 0, len = 0;
    unsigned char *rec;
    char p[400], err[512], want[128];
    (void)state;
    fill_env(&a, "a@example.org");
    commit(s, &a, (const unsigned char *)"aaa", 3, NULL, 0);
    fill_env(&b, "b@example.org");
    commit(s, &b, (const unsigned char *)"bbb", 3, NULL, 0);
    fill_env(&good, "g@example.org");
    commit(s, &good, (const unsigned char *)"ggg", 3, NULL, 0);
    /* a: body gone; b: envelope garbled (torn in the middle) */
    assert_non_null(spool_body_path(s, a.queue_id, p, sizeof(p)));
    assert_int_equal(unlink(p), 0);
    assert_non_null(spool_env_path(s, b.queue_id, p, sizeof(p)));
    rec = slurp(p, &len);
    spit(p, rec, len / 2);
    free(rec);
    /* something that is not ours */
    sub_path(p, sizeof(p), "queue", "stray\nname");
    spit(p, (const unsigned char *)"?", 1);

    log_capture();
    int r = spool_scan(s, &list, &n, &st, err, sizeof(err));
    const char *log = log_release();
    assert_int_equal(r, 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].queue_id, good.queue_id);
    assert_int_equal(st.quarantined, 3);
    snprintf(want, sizeof(want), "event=spool_quarantined queue_id=%s", a.queue_id);
    assert_true(contains(log, want));
    snprintf(want, sizeof(want), "event=spool_quarantined queue_id=%s", b.queue_id);
    assert_true(contains(log, want));
    assert_true(contains(log, "file=\"stray\\x0aname\""));
    /* set aside, not deleted: a's envelope, b's envelope and body, the stray file */
    assert_int_equal(count_entries("corrupt"), 4);
    snprintf(want, sizeof(want), "%s.env", a.queue_id);
    sub_path(p, sizeof(p), "corrupt", want);
    assert_mode(p, 0600);
    assert_int_equal(count_entries("queue"), 2);
    spool_list_free(list, n);
    spool_free(s);
}

/* ---- state updates and removal ---- */

static void test_update_state_and_remove(void **state)
{
    struct spool *s = open_spool(1);
    struct spool_envelope env, got;
    char err[512], p[400];
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)"x", 1, NULL, 0);
    env.attempts = 3;
    env.next_attempt = CREATED + 240;
    env.last_error = "421 4.3.2 busy\r\nPASS secret\x01";
    env.held = 1;
    assert_int_equal(spool_update_state(s, &env, err, sizeof(err)), 0);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
    assert_int_equal(got.attempts, 3);
    assert_int_equal(got.next_attempt, CREATED + 240);
    assert_int_equal(got.held, 1);
    assert_string_equal(got.last_error, "421 4.3.2 busy??PASS secret?");
    assert_int_equal(got.size, 1);
    assert_non_null(spool_env_path(s, env.queue_id, p, sizeof(p)));
    assert_mode(p, 0600);
    assert_int_equal(count_entries("tmp"), 0);
    spool_envelope_clear(&got);

    assert_int_equal(spool_remove(s, env.queue_id, err, sizeof(err)), 0);
    assert_int_equal(count_entries("queue"), 0);
    assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 0);
    assert_int_equal(spool_remove(s, env.queue_id, err, sizeof(err)), 0);
    /* an update after the removal never brings the message back */
    assert_int_equal(spool_update_state(s, &env, err, sizeof(err)), -1);
    assert_true(contains(err, "not in the queue"));
    assert_int_equal(count_entries("queue"), 0);
    assert_int_equal(spool_remove(s, "../../etc/passwd", err, sizeof(err)), -1);
    spool_free(s);
}

/* A child rewrites the state in a loop and is killed -9 at a random moment; the envelope must
 * then be one of the records it wrote, whole, never a mix or a torn file. */
static void test_update_state_atomic_under_kill(void **state)
{
    struct spool *s = open_spool(0);
    struct spool_envelope env, got, *list = NULL;
    char err[512];
    size_t n = 0;
    int progressed = 0;
    (void)state;
    fill_env(&env, "a@example.org");
    commit(s, &env, (const unsigned char *)"x", 1, NULL, 0);
    srand((unsigned)time(NULL));
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char cerr[512];
            struct spool_envelope e = env;
            char msg[64];
            for (uint32_t i = 1; i < 1000000; i++) {
                e.attempts = i;
                e.next_attempt = CREATED + i;
                snprintf(msg, sizeof(msg), "attempt %u failed", i);
                e.last_error = msg;
                if (spool_update_state(s, &e, cerr, sizeof(cerr)) != 0)
                    _exit(3);
            }
            _exit(0);
        }
        usleep((useconds_t)(1000 + rand() % 20000));
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(spool_load_envelope(s, env.queue_id, &got, err, sizeof(err)), 1);
        char want[64];
        progressed += got.attempts > 0;
        if (got.attempts > 0) {
            assert_int_equal(got.next_attempt, CREATED + got.attempts);
            snprintf(want, sizeof(want), "attempt %u failed", got.attempts);
            assert_string_equal(got.last_error, want);
        }
        spool_envelope_clear(&got);
    }
    assert_true(progressed > 0); /* the child did get to write */
    assert_int_equal(spool_scan(s, &list, &n, NULL, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_int_equal(count_entries("tmp"), 0);
    spool_list_free(list, n);
    spool_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_and_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_sender_8bit_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multi_mb_odd_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_reader_round_trip_then_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_reader_empty_and_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_reader_detects_changed_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_and_bad_envelope_leave_nothing, setup, teardown),
        cmocka_unit_test(test_record_truncated_at_every_offset),
        cmocka_unit_test(test_record_every_byte_changed),
        cmocka_unit_test(test_hostile_fields_rejected),
        cmocka_unit_test_setup_teardown(test_envelope_file_truncated_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_truncated_or_garbled_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_recovers_orders_and_cleans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_orphan_body_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_envelope_without_body_quarantined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_update_state_and_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_state_atomic_under_kill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
