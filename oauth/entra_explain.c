/* The AADSTS table. Short lines: the hint shares a log line (about 300 characters) with the
 * IdP's own description. No double quotes: the text ends up in key="value" log lines. */
#include "oauth/entra_explain.h"

#include <stdio.h>
#include <string.h>

#include "oauth/token_response.h"

#define SECRETS "Entra admin center > App registrations > the app > Certificates & secrets"

static const struct entra_explanation table[] = {
    {7000215, "the client secret is wrong (the Secret ID pasted instead of the Value?)",
     SECRETS " > New client secret; put its Value alone in client_secret_file"},
    {7000222, "the client secret has expired",
     SECRETS " > New client secret; put its Value in client_secret_file, then restart"},
    {700016, "no application with this client_id in this tenant",
     "copy Application (client) ID and Directory (tenant) ID from the app's Overview page into "
     "client_id and tenant"},
    {70011, "the scope is not valid for this app",
     "remove scope from the account (app-only: https://outlook.office365.com/.default; "
     "delegated: https://outlook.office.com/SMTP.Send offline_access)"},
    {1002012, "the scope is not valid for client credentials (it must end in /.default)",
     "remove scope from the account: the default https://outlook.office365.com/.default is "
     "right"},
    {90002, "the tenant does not exist",
     "tenant = the Directory (tenant) ID or the tenant's onmicrosoft.com domain"},
    {700027, "the certificate that signed the assertion is not registered on the app",
     SECRETS " > Certificates > Upload certificate (the file client_certificate names)"},
    {7000112, "the application is disabled",
     "Entra admin center > Enterprise applications > the app > Properties > Enabled for users "
     "to sign-in = Yes"},
    {65001, "admin consent is missing",
     "Entra admin center > App registrations > the app > API permissions > Grant admin consent"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

const struct entra_explanation *entra_explain(long aadsts)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].aadsts == aadsts)
            return &table[i];
    return NULL;
}

const char *entra_explain_format(const struct entra_explanation *e, char *buf, size_t len)
{
    snprintf(buf, len, "%s; fix: %s", e->meaning, e->fix);
    return buf;
}

const struct entra_explanation *entra_explain_table(size_t *n)
{
    *n = NTABLE;
    return table;
}

void entra_explain_hint(const struct provider *p, const char *error, const char *description,
                        char *buf, size_t len)
{
    (void)p;
    (void)error;
    const struct entra_explanation *e = entra_explain(token_response_aadsts(description));
    if (e)
        entra_explain_format(e, buf, len);
}
