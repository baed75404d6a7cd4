/* What Entra ID's token endpoint refusals (AADSTS codes) mean and what an admin changes: one
 * table, a pure lookup, and the grant explain hook (oauth/grant.h) that puts it in
 * event=token_failed's hint=. Exchange's SMTP refusals are proxy/smtp/exchange_explain.h's. */
#ifndef SOP_ENTRA_EXPLAIN_H
#define SOP_ENTRA_EXPLAIN_H

#include <stddef.h>

struct provider;

struct entra_explanation {
    long aadsts;         /* 7000215 */
    const char *meaning; /* one line */
    const char *fix;     /* one line: where in the Entra admin center, or which config key */
};

/* The entry for an AADSTS code, or NULL when the table does not know it. */
const struct entra_explanation *entra_explain(long aadsts);
/* "meaning; fix: fix" into buf (cut to len). Returns buf. */
const char *entra_explain_format(const struct entra_explanation *e, char *buf, size_t len);
/* The whole table, for docs and tests. */
const struct entra_explanation *entra_explain_table(size_t *n);
/* A grant_explain_fn (oauth/grant.h): the table's line for the description's AADSTS code, or
 * buf left empty. */
void entra_explain_hint(const struct provider *p, const char *error, const char *description,
                        char *buf, size_t len);

#endif
