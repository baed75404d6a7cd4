/* The refusal table. Entries with a text fragment come before the entry for the same code
 * without one, so the most specific explanation wins. Texts stay free of double quotes: they end
 * up in key="value" log lines. */
#include "proxy/exchange_explain.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"

#define TEXT_SCAN_MAX 4096

#define PS_SP                                                                                      \
    "New-ServicePrincipal -AppId {client_id} -ObjectId <object ID of the Enterprise "              \
    "application, not of the app registration>"
#define PS_FULLACCESS                                                                              \
    "Add-MailboxPermission -Identity {mailbox} -User <that Enterprise application object ID> "     \
    "-AccessRights FullAccess"
#define PS_CAS "Set-CASMailbox -Identity {mailbox} -SmtpClientAuthenticationDisabled $false"
#define PS_TRANSPORT "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"
#define SECDEF                                                                                     \
    "Entra admin center > Identity > Overview > Properties > Manage security defaults > "          \
    "Disabled (and protect sign-ins with Conditional Access instead)"
#define SENDAS                                                                                     \
    "set sender_rewrite = envelope (or header) in the account so the proxy sends as {mailbox}, "   \
    "or let the mailbox send as the device's address: Add-RecipientPermission -Identity "          \
    "<device's sender address> -Trustee {mailbox} -AccessRights SendAs"

static const struct exchange_explanation table[] = {
    {535, "5.7.139", "disabled for the tenant", EXCHANGE_PHASE_AUTH,
     "SMTP AUTH is disabled for the whole tenant",
     "in Exchange Online PowerShell enable it for this mailbox only: " PS_CAS
     " (or tenant-wide: " PS_TRANSPORT ")"},
    {535, "5.7.139", "disabled for the mailbox", EXCHANGE_PHASE_AUTH,
     "SMTP AUTH is disabled for the mailbox {mailbox}",
     "in Exchange Online PowerShell: " PS_CAS " (then wait up to an hour)"},
    {535, "5.7.139", "security defaults", EXCHANGE_PHASE_AUTH,
     "Security Defaults block SMTP AUTH in this tenant", SECDEF},
    {535, "5.7.139", "did not meet the criteria", EXCHANGE_PHASE_AUTH,
     "a Conditional Access policy blocked the sign-in of app {client_id}",
     "Entra admin center > Protection > Conditional Access: find the policy in the app's sign-in "
     "logs and exclude the app (or the mailbox)"},
    {535, "5.7.139", NULL, EXCHANGE_PHASE_AUTH,
     "SMTP AUTH is disabled for the tenant or the mailbox, or Security Defaults or Conditional "
     "Access block it",
     "in Exchange Online PowerShell: " PS_CAS " (tenant-wide: " PS_TRANSPORT
     "); if it persists: " SECDEF},
    {535, "5.7.3", NULL, EXCHANGE_PHASE_AUTH,
     "Exchange refused the token: the app has no service principal in Exchange, no permission on "
     "the mailbox {mailbox}, or no admin consent for SMTP.SendAsApp",
     "in Exchange Online PowerShell: " PS_SP "; then " PS_FULLACCESS
     "; in Entra: app > API permissions > Office 365 Exchange Online > SMTP.SendAsApp "
     "(Application) > Grant admin consent; changes take up to 30 minutes to reach Exchange"},
    {530, "5.7.57", NULL, EXCHANGE_PHASE_MAIL,
     "the server took MAIL before a successful AUTH (client not authenticated)",
     "the proxy always authenticates first: check that upstream_host is smtp.office365.com port "
     "587 and that `smtp-oauth-proxy test` shows 235 for AUTH; if it does, report a bug"},
    {550, "5.7.60", NULL, EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_DATA,
     "the mailbox {mailbox} may not send as this sender address (SendAs)", SENDAS},
    {554, "5.2.252", NULL, EXCHANGE_PHASE_DATA,
     "SendAsDenied: the mailbox {mailbox} may not send as the message's From address", SENDAS},
    {554, "5.2.0", "sendasdenied", EXCHANGE_PHASE_DATA,
     "SendAsDenied: the mailbox {mailbox} may not send as the message's From address", SENDAS},
    {432, "4.3.2", NULL, EXCHANGE_PHASE_AUTH | EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_DATA,
     "more than 3 connections at once to the mailbox {mailbox} (sender thread limit); the device "
     "retries",
     "lower the concurrency: fewer devices sending through this account at the same moment, or "
     "spread them over more accounts and mailboxes (Exchange allows 3 connections per mailbox)"},
    {430, "4.2.0", "storedrv", EXCHANGE_PHASE_AUTH | EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_DATA,
     "Exchange could not open the mailbox {mailbox} (STOREDRV mailbox logon failure); the device "
     "retries",
     "if it persists: check the app's permission on the mailbox (" PS_FULLACCESS
     ") and that Get-Mailbox {mailbox} shows a licensed user or shared mailbox"},
    {550, "5.4.5", NULL, EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_RCPT | EXCHANGE_PHASE_DATA,
     "the mailbox {mailbox} is over its sending limits (10,000 recipients a day, 30 messages a "
     "minute)",
     "wait (the block lifts within 24 hours), or spread the devices over more mailboxes"},
    {421, "4.7.66", NULL, EXCHANGE_PHASE_CONNECT, "the server refused TLS 1.0/1.1",
     "the proxy speaks TLS 1.2 or later upstream: look for a TLS-intercepting middlebox between "
     "the proxy and Exchange"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Case-insensitive search for needle (lower case) in the first max bytes of hay. */
static int contains(const char *hay, const char *needle, size_t max)
{
    size_t nl = strlen(needle);
    size_t hl = strnlen(hay, max);
    for (size_t i = 0; i + nl <= hl; i++) {
        size_t k = 0;
        while (k < nl && lower((unsigned char)hay[i + k]) == needle[k])
            k++;
        if (k == nl)
            return 1;
    }
    return 0;
}

const struct exchange_explanation *exchange_explain(int code, const char *enhanced,
                                                    const char *text)
{
    if (!enhanced || !*enhanced)
        return NULL; /* Exchange always sends one; a bare code says too little */
    for (size_t i = 0; i < NTABLE; i++) {
        const struct exchange_explanation *e = &table[i];
        if (e->code != code || strcmp(e->enhanced, enhanced) != 0)
            continue;
        if (e->fragment && !(text && contains(text, e->fragment, TEXT_SCAN_MAX)))
            continue;
        return e;
    }
    return NULL;
}

/* src into buf at *o with {mailbox} / {client_id} filled in; stops at the end of buf. */
static void fill(char *buf, size_t len, size_t *o, const char *src, const char *mailbox,
                 const char *client_id)
{
    static const char mb[] = "{mailbox}", ci[] = "{client_id}";
    while (*src && *o + 1 < len) {
        const char *val = NULL;
        size_t skip = 1;
        if (mailbox && strncmp(src, mb, sizeof(mb) - 1) == 0) {
            val = mailbox;
            skip = sizeof(mb) - 1;
        } else if (client_id && strncmp(src, ci, sizeof(ci) - 1) == 0) {
            val = client_id;
            skip = sizeof(ci) - 1;
        }
        if (val) {
            for (; *val && *o + 1 < len; val++)
                buf[(*o)++] = *val;
        } else {
            buf[(*o)++] = *src;
        }
        src += skip;
    }
    buf[*o] = '\0';
}

const char *exchange_explain_format(const struct exchange_explanation *e, const char *mailbox,
                                    const char *client_id, char *buf, size_t len)
{
    size_t o = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    fill(buf, len, &o, e->meaning, mailbox, client_id);
    fill(buf, len, &o, "; fix: ", NULL, NULL);
    fill(buf, len, &o, e->fix, mailbox, client_id);
    return buf;
}

const char *exchange_explain_fix(const struct exchange_explanation *e, const char *mailbox,
                                 const char *client_id, char *buf, size_t len)
{
    size_t o = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    fill(buf, len, &o, e->fix, mailbox, client_id);
    return buf;
}

const char *exchange_explain_kv(int code, const char *enhanced, const char *text,
                                const char *mailbox, const char *client_id, char *buf, size_t len)
{
    const struct exchange_explanation *e = code ? exchange_explain(code, enhanced, text) : NULL;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (e) {
        char line[700], safe[800];
        exchange_explain_format(e, mailbox, client_id, line, sizeof(line));
        snprintf(buf, len, " explain=%s", log_safe(safe, sizeof(safe), line, strlen(line)));
    }
    return buf;
}

const char *exchange_phase_names(unsigned phases, char *buf, size_t len)
{
    static const char *const names[] = {"connect", "AUTH", "MAIL", "RCPT", "DATA"};
    size_t o = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(phases & (1u << i)))
            continue;
        if (o)
            fill(buf, len, &o, "/", NULL, NULL);
        fill(buf, len, &o, names[i], NULL, NULL);
    }
    return buf;
}

const struct exchange_explanation *exchange_explain_table(size_t *n)
{
    *n = NTABLE;
    return table;
}
