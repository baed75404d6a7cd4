/* What Exchange Online's refusals mean and what an admin changes: one table, a pure lookup.
 * Used by the daemon's log lines (explain="...") and by the `test` command. The token
 * endpoint's AADSTS codes are oauth/entra_explain.h's (oauth/ cannot see proxy/). */
#ifndef SOP_EXCHANGE_EXPLAIN_H
#define SOP_EXCHANGE_EXPLAIN_H

#include <stddef.h>

/* Where in the session Exchange gives the reply (informational: the lookup ignores it). */
enum exchange_phase {
    EXCHANGE_PHASE_CONNECT = 1 << 0,
    EXCHANGE_PHASE_AUTH = 1 << 1,
    EXCHANGE_PHASE_MAIL = 1 << 2,
    EXCHANGE_PHASE_RCPT = 1 << 3,
    EXCHANGE_PHASE_DATA = 1 << 4,
};

struct exchange_explanation {
    int code;             /* 535 */
    const char *enhanced; /* "5.7.139" */
    const char *fragment; /* NULL, or text the reply must contain (case-insensitive) */
    unsigned phases;      /* enum exchange_phase bits */
    const char *meaning;  /* one line */
    /* One line: the exact PowerShell or portal steps. {mailbox} and {client_id} are
     * placeholders that exchange_explain_format fills in. */
    const char *fix;
};

/* What an account authenticates with, and where to: a few replies (to AUTH) mean something else
 * for a password than for a token, or at High Volume Email than at smtp.office365.com. */
#define EXCHANGE_CRED_TOKEN 1u    /* XOAUTH2 / OAUTHBEARER */
#define EXCHANGE_CRED_PASSWORD 2u /* PLAIN / LOGIN */
#define EXCHANGE_CRED_NONE 4u     /* no AUTH */
struct exchange_ctx {
    unsigned cred; /* one EXCHANGE_CRED_* */
    int hve;       /* the upstream is High Volume Email (exchange_host_is_hve) */
};

/* The entry for a reply (code, its enhanced code or "" / NULL, the reply's text: any bytes up to
 * a NUL, only the first 4096 are looked at), or NULL when the table does not know it. The main
 * table only: what a reply means to an account that authenticates with a token at Exchange
 * Online's submission endpoint, and what every account hears at MAIL, RCPT and DATA. */
const struct exchange_explanation *exchange_explain(int code, const char *enhanced,
                                                    const char *text);
/* The same, knowing the account: an entry for its context first (exchange_explain_ctx_table),
 * else the main table's. ctx NULL: exchange_explain. */
const struct exchange_explanation *exchange_explain_ctx(int code, const char *enhanced,
                                                        const char *text,
                                                        const struct exchange_ctx *ctx);
/* 1 when host is Exchange Online's High Volume Email endpoint (smtp.hve.mx.microsoft, or the
 * older smtp-hve.office365.com). */
int exchange_host_is_hve(const char *host);
/* "meaning; fix: fix" with the placeholders filled (NULL: left as they are), cut to len. Returns
 * buf. */
const char *exchange_explain_format(const struct exchange_explanation *e, const char *mailbox,
                                    const char *client_id, char *buf, size_t len);
/* Only the fix, placeholders filled, into buf. Returns buf. */
const char *exchange_explain_fix(const struct exchange_explanation *e, const char *mailbox,
                                 const char *client_id, char *buf, size_t len);
/* For a log line: " explain=\"meaning; fix: ...\"" (log-safe, leading space) when the table knows
 * the reply (code 0: none), else "". Returns buf (at least 900 bytes holds any entry). */
const char *exchange_explain_kv(int code, const char *enhanced, const char *text,
                                const char *mailbox, const char *client_id, char *buf, size_t len);
/* exchange_explain_kv with the account's context (exchange_explain_ctx). */
const char *exchange_explain_kv_ctx(int code, const char *enhanced, const char *text,
                                    const char *mailbox, const char *client_id,
                                    const struct exchange_ctx *ctx, char *buf, size_t len);
/* The phases as "AUTH", "MAIL/DATA", ... Returns buf. */
const char *exchange_phase_names(unsigned phases, char *buf, size_t len);
/* The whole main table, for docs and tests. */
const struct exchange_explanation *exchange_explain_table(size_t *n);
/* The context entries: entry i applies to contexts with a cred in creds[i] (0: any) and, when
 * hve[i], only at High Volume Email. */
const struct exchange_explanation *exchange_explain_ctx_table(size_t *n, const unsigned **creds,
                                                              const int **hve);

#endif
