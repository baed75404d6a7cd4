/* The refusal tables. Entries with a text fragment come before the entry for the same code
 * without one, so the most specific explanation wins. Texts stay free of double quotes: they end
 * up in key="value" log lines. The main table serves every lookup; the context table (replies to
 * AUTH that mean something else for a password, or at High Volume Email) only lookups that know
 * the account (exchange_explain_ctx), and is consulted first. */
#include "proxy/smtp/exchange_explain.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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
#define CONNECTOR                                                                                  \
    "Exchange admin center > Mail flow > Connectors > Add a connector: from Your organization's "  \
    "email server to Office 365, identified by this host's static public IP or by the TLS "        \
    "certificate (upstream_client_certificate, whose CN or SAN is an accepted domain)"
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
    /* The MX endpoint (direct send, connector relay): Exchange Online's NDR codes 5.7.54, 5.7.64,
     * 5.7.51, 5.7.68 and Directory-Based Edge Blocking's 5.4.1. */
    {550, "5.7.54", NULL, EXCHANGE_PHASE_RCPT,
     "Exchange Online relays nothing to this recipient: its domain is not an accepted domain of "
     "the tenant, and this connection matched no connector that may relay (direct send reaches "
     "only the tenant's own mailboxes)",
     "send to the tenant's own domains only; for other recipients use SMTP AUTH submission "
     "(provider = microsoft, upstream_auth = auto, smtp.office365.com port 587) or a "
     "connector: " CONNECTOR},
    {550, "5.7.64", NULL, EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_RCPT,
     "relay access denied (TenantAttribution): the connection matched no inbound connector of "
     "the tenant: the sending IP is not the connector's, or the TLS client certificate is not "
     "the one it expects",
     "in Exchange Online PowerShell: Get-InboundConnector | Format-List "
     "Name,SenderIPAddresses,TlsSenderCertificateName,RequireTls; TlsSenderCertificateName must "
     "be a domain in the CN or SAN of upstream_client_certificate (an accepted domain), or "
     "SenderIPAddresses must hold this host's public IP; with no such connector, add one "
     "(Exchange admin center > Mail flow > Connectors)"},
    {550, "5.7.51", NULL, EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_RCPT,
     "a connector matched the connection but its restrictions refused it "
     "(TenantInboundAttribution: RestrictDomainsToCertificate or RestrictDomainsToIPAddresses, "
     "and the certificate or IP does not fit the sender's domain)",
     "Get-InboundConnector | Format-List Name,RestrictDomainsToCertificate,"
     "RestrictDomainsToIPAddresses,TlsSenderCertificateName,SenderDomains: send from a domain "
     "the connector covers, with the certificate (upstream_client_certificate) or IP it names"},
    {550, "5.7.68", NULL, EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_RCPT,
     "the tenant rejects direct send: unauthenticated mail from outside (Set-OrganizationConfig "
     "-RejectDirectSend $true)",
     "send through a connector (" CONNECTOR ") or SMTP AUTH submission (provider = microsoft, "
     "smtp.office365.com port 587); or accept direct send again with Set-OrganizationConfig "
     "-RejectDirectSend $false"},
    {550, "5.4.1", "access denied", EXCHANGE_PHASE_RCPT,
     "the recipient does not exist in the tenant (Directory-Based Edge Blocking refuses unknown "
     "addresses of accepted domains)",
     "check the address (a new mailbox takes a while to reach Exchange Online Protection); if "
     "some of the domain's mailboxes live elsewhere, make it an internal relay domain: "
     "Set-AcceptedDomain -Identity <domain> -DomainType InternalRelay"},
    {550, "5.7.30", NULL, EXCHANGE_PHASE_AUTH | EXCHANGE_PHASE_MAIL,
     "Exchange Online no longer takes a password for SMTP AUTH client submission (Basic "
     "authentication is off)",
     "use OAuth: set provider = microsoft with its app registration and upstream_auth = auto "
     "(README: Which upstream?)"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

/* Replies to AUTH whose meaning depends on the account (struct exchange_ctx): entry i applies
 * to creds ctx_creds[i] (EXCHANGE_CRED_* bits; 0: any) and, when ctx_hve[i], only at High Volume
 * Email. */
static const unsigned ctx_creds[] = {EXCHANGE_CRED_TOKEN, 0, EXCHANGE_CRED_PASSWORD};
static const int ctx_hve[] = {1, 1, 0};
static const struct exchange_explanation ctx_table[] = {
    {535, "5.7.3", NULL, EXCHANGE_PHASE_AUTH,
     "High Volume Email refused the token: app {client_id} is not among the HVE account's "
     "allowed apps, or lacks the application permission and admin consent",
     "in Exchange Online PowerShell: Add-HVEAppAccess -Identity {mailbox} -AppIds {client_id} "
     "(at most 10 apps per HVE account; takes up to 5 minutes); in Entra: app > API "
     "permissions > Office 365 Exchange Online > Application permissions (Mail.Send, as "
     "Microsoft's HVE OAuth page shows) > Grant admin consent; mailbox must be the HVE "
     "account's address"},
    {535, "5.7.139", NULL, EXCHANGE_PHASE_AUTH,
     "High Volume Email refused the sign-in: Security Defaults, or an authentication policy of "
     "the HVE account without AllowBasicAuthSmtp (HVE ignores SmtpClientAuthenticationDisabled)",
     SECDEF "; or Set-AuthenticationPolicy -Identity <the HVE account's policy> "
            "-AllowBasicAuthSmtp"},
    {535, "5.7.3", NULL, EXCHANGE_PHASE_AUTH,
     "the upstream refused upstream_username and the password in upstream_password_file (Azure "
     "Communication Services: the user name of an SMTP Username resource, and the client "
     "secret value of the Entra app it names, which expires)",
     "check both; for Azure Communication Services: the Communication Services resource > SMTP "
     "Usernames (the user name and its Entra app), a new client secret for that app (its Value "
     "alone in upstream_password_file), and a role on the resource that may send email for the "
     "app; for an on-site smarthost: its account and password"},
};
#define NCTX (sizeof(ctx_table) / sizeof(ctx_table[0]))
_Static_assert(sizeof(ctx_creds) / sizeof(ctx_creds[0]) == NCTX, "one ctx_creds per entry");
_Static_assert(sizeof(ctx_hve) / sizeof(ctx_hve[0]) == NCTX, "one ctx_hve per entry");

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

static int matches(const struct exchange_explanation *e, int code, const char *enhanced,
                   const char *text)
{
    if (e->code != code || strcmp(e->enhanced, enhanced) != 0)
        return 0;
    return !e->fragment || (text && contains(text, e->fragment, TEXT_SCAN_MAX));
}

const struct exchange_explanation *exchange_explain(int code, const char *enhanced,
                                                    const char *text)
{
    if (!enhanced || !*enhanced)
        return NULL; /* Exchange always sends one; a bare code says too little */
    for (size_t i = 0; i < NTABLE; i++)
        if (matches(&table[i], code, enhanced, text))
            return &table[i];
    return NULL;
}

const struct exchange_explanation *exchange_explain_ctx(int code, const char *enhanced,
                                                        const char *text,
                                                        const struct exchange_ctx *ctx)
{
    if (ctx && enhanced && *enhanced) {
        for (size_t i = 0; i < NCTX; i++) {
            if (ctx_creds[i] && !(ctx_creds[i] & ctx->cred))
                continue;
            if (ctx_hve[i] && !ctx->hve)
                continue;
            if (matches(&ctx_table[i], code, enhanced, text))
                return &ctx_table[i];
        }
    }
    return exchange_explain(code, enhanced, text);
}

int exchange_host_is_hve(const char *host)
{
    static const char *const hve[] = {"smtp.hve.mx.microsoft", "smtp-hve.office365.com"};
    for (size_t i = 0; host && i < sizeof(hve) / sizeof(hve[0]); i++)
        if (strcasecmp(host, hve[i]) == 0)
            return 1;
    return 0;
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
    return exchange_explain_kv_ctx(code, enhanced, text, mailbox, client_id, NULL, buf, len);
}

const char *exchange_explain_kv_ctx(int code, const char *enhanced, const char *text,
                                    const char *mailbox, const char *client_id,
                                    const struct exchange_ctx *ctx, char *buf, size_t len)
{
    const struct exchange_explanation *e =
        code ? exchange_explain_ctx(code, enhanced, text, ctx) : NULL;
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

const struct exchange_explanation *exchange_explain_ctx_table(size_t *n, const unsigned **creds,
                                                              const int **hve)
{
    *n = NCTX;
    *creds = ctx_creds;
    *hve = ctx_hve;
    return ctx_table;
}
