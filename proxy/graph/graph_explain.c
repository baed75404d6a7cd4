/* Graph's refusals: one table, the most specific entry first (status and code, then the status
 * alone, then the status class). Texts stay free of double quotes: they end up in key="value"
 * log lines. {mailbox} in a text is the account's mailbox. */
#include "proxy/graph/graph_explain.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#define STEPS_ALL 0u
#define STEP_BIT(s) (1u << (s))
#define STEPS_DRAFT                                                                                \
    (STEP_BIT(GRAPH_STEP_DRAFT) | STEP_BIT(GRAPH_STEP_UPLOAD_SESSION) |                            \
     STEP_BIT(GRAPH_STEP_UPLOAD) | STEP_BIT(GRAPH_STEP_SEND) | STEP_BIT(GRAPH_STEP_DELETE) |       \
     STEP_BIT(GRAPH_STEP_ATTACH))

#define PS_RBAC                                                                                    \
    "New-ManagementRoleAssignment -App <app object ID> -Role 'Application Mail.Send' "             \
    "-CustomResourceScope <scope>; or Test-ApplicationAccessPolicy -Identity {mailbox} -AppId "    \
    "<client id>, then New-ApplicationAccessPolicy"
#define CONSENT                                                                                    \
    "Entra: app > API permissions > Microsoft Graph > Mail.Send (Application) > Grant "            \
    "admin consent"

struct graph_explanation {
    long status;      /* HTTP status; 0: any; 400/500 with class: the class */
    int status_class; /* 1: status / 100 matches */
    const char *code; /* Graph's error code (case-insensitive); NULL: any */
    unsigned steps;   /* STEP_BIT mask; 0: any */
    enum graph_status outcome;
    int conn_failure;
    const char *reply; /* code and enhanced code: "550 5.7.1" */
    const char *text;  /* the reply's text after Microsoft Graph's code */
    const char *meaning;
    const char *fix; /* NULL: none */
    /* NULL, or text Graph's message must contain (lower case; compared ignoring case) */
    const char *fragment;
};

static const struct graph_explanation table[] = {
    {401, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.7.0", "Microsoft Graph refused the token",
     "the token is for another resource (audience): Graph refuses a token for "
     "outlook.office365.com",
     "set scope = https://graph.microsoft.com/.default for the account (graph.microsoft.us, "
     "dod-graph.microsoft.us or microsoftgraph.chinacloudapi.cn in the other clouds)",
     "audience"},
    {401, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.7.0", "Microsoft Graph refused the token",
     "Graph found the token expired although a fresh one was fetched: the host's clock is likely "
     "wrong",
     "check the host's time (timedatectl; NTP)", "expired"},
    {401, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.7.0", "Microsoft Graph refused the token",
     "Graph refused the access token: issued for another audience (the scope must be "
     "https://graph.microsoft.com/.default, or the cloud's Graph), expired, or for another tenant",
     "set scope = https://graph.microsoft.com/.default for the account (graph.microsoft.us, "
     "dod-graph.microsoft.us or microsoftgraph.chinacloudapi.cn in the other clouds) and check "
     "the host's clock",
     NULL},
    {403, 0, "ErrorAccessDenied", STEPS_DRAFT, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph denied access to the mailbox's drafts",
     "a message larger than one request goes through a draft, which needs Mail.ReadWrite as well "
     "as Mail.Send, or RBAC for Applications scopes the app away from {mailbox}",
     "Entra admin center > App registrations > the app > API permissions > Microsoft Graph > "
     "Application permissions > Mail.ReadWrite > Grant admin consent (with RBAC for "
     "Applications: the role Application Mail.ReadWrite scoped to {mailbox})",
     NULL},
    {403, 0, NULL, STEPS_DRAFT, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph denied access to the mailbox's drafts",
     "a message larger than one request goes through a draft, which needs Mail.ReadWrite as well "
     "as Mail.Send",
     "Entra admin center > App registrations > the app > API permissions > Microsoft Graph > "
     "Application permissions > Mail.ReadWrite > Grant admin consent",
     NULL},
    {403, 0, "ErrorSendAsDenied", STEPS_ALL, GRAPH_PERM, 0, "550 5.7.60",
     "Microsoft Graph refused the sender",
     "the message's From: is not {mailbox} and the mailbox may not send as that address",
     "set sender_rewrite = header in the account (From: becomes {mailbox}, the original kept as "
     "Reply-To:), or grant SendAs: Add-RecipientPermission -Identity <From: address> -Trustee "
     "{mailbox} -AccessRights SendAs",
     NULL},
    {403, 0, "MailboxNotEnabledForRESTAPI", STEPS_ALL, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph cannot use this mailbox",
     "{mailbox} is on-premises, inactive, soft-deleted or has no Exchange Online licence: Graph "
     "sends only from Exchange Online mailboxes",
     "assign an Exchange Online licence to {mailbox} (or use a cloud mailbox), or use upstream = "
     "smtp for an on-premises mailbox",
     NULL},
    {403, 0, NULL, STEPS_ALL, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph denied the app access to the mailbox",
     "no Mail.Send application permission or admin consent, or RBAC for Applications or an "
     "application access policy keeps the app from the mailbox",
     CONSENT "; " PS_RBAC, NULL},
    {404, 0, "MailboxNotEnabledForRESTAPI", STEPS_ALL, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph cannot use this mailbox",
     "{mailbox} is on-premises, inactive, soft-deleted or has no Exchange Online licence",
     "assign an Exchange Online licence to {mailbox}, or use upstream = smtp", NULL},
    {404, 0, NULL, STEP_BIT(GRAPH_STEP_UPLOAD) | STEP_BIT(GRAPH_STEP_SEND), GRAPH_TEMP, 0,
     "451 4.3.0", "Microsoft Graph lost the draft or its upload session",
     "the draft or the upload session expired or was removed while the message was sent", NULL,
     NULL},
    {404, 0, NULL, STEPS_ALL, GRAPH_PERM, 0, "550 5.1.1",
     "Microsoft Graph does not know the mailbox",
     "{mailbox} does not exist in the tenant (ErrorInvalidUser, ResourceNotFound) or has no "
     "Exchange licence",
     "check mailbox = in the account: the mailbox's primary SMTP address or user principal name, "
     "with an Exchange Online licence",
     NULL},
    {400, 0, "ErrorMimeContentInvalidBase64String", STEPS_ALL, GRAPH_PERM, 0, "554 5.6.0",
     "Microsoft Graph could not decode the message",
     "Graph refused the base64 of the message's MIME", NULL, NULL},
    {0, 0, "ErrorMessageSizeExceeded", STEPS_ALL, GRAPH_PERM, 0, "552 5.3.4",
     "Message too large for Microsoft Graph",
     "the message passes the mailbox's size limit (MaxSendSize, at most 150 MB)",
     "Set-Mailbox -Identity {mailbox} -MaxSendSize 150MB, or send smaller messages", NULL},
    {413, 0, NULL, STEPS_ALL, GRAPH_PERM, 0, "552 5.3.4", "Message too large for Microsoft Graph",
     "one request passed Graph's 4 MB limit or the mailbox's size limit",
     "Set-Mailbox -Identity {mailbox} -MaxSendSize 150MB, or send smaller messages", NULL},
    {0, 0, "ErrorSendAsDenied", STEPS_ALL, GRAPH_PERM, 0, "550 5.7.60",
     "Microsoft Graph refused the sender",
     "the message's From: is not {mailbox} and the mailbox may not send as that address",
     "set sender_rewrite = header in the account", NULL},
    {0, 0, "MailboxNotEnabledForRESTAPI", STEPS_ALL, GRAPH_PERM, 0, "550 5.7.1",
     "Microsoft Graph cannot use this mailbox",
     "{mailbox} is on-premises, inactive, soft-deleted or has no Exchange Online licence",
     "assign an Exchange Online licence to {mailbox}, or use upstream = smtp", NULL},
    {429, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.7.0",
     "Microsoft Graph is throttling the mailbox",
     "Graph throttles the mailbox (10,000 requests per 10 minutes, 4 at once): the message waits "
     "in the spool until Retry-After has passed",
     "set rate_limit for the account if this happens often", NULL},
    {503, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.3.2", "Microsoft Graph is unavailable",
     "Graph is busy or down: the message waits in the spool until Retry-After has passed", NULL,
     NULL},
    {408, 0, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.4.2", "Microsoft Graph timed out",
     "Graph did not get the request in time", NULL, NULL},
    {500, 0, NULL, STEPS_ALL, GRAPH_TEMP, 0, "451 4.3.0", "Microsoft Graph failed",
     "Graph failed on this request: it is tried again later", NULL, NULL},
    {500, 1, NULL, STEPS_ALL, GRAPH_TEMP, 1, "451 4.3.0", "Microsoft Graph failed",
     "Graph or a gateway in front of it failed: it is tried again later", NULL, NULL},
    {400, 1, NULL, STEPS_ALL, GRAPH_PERM, 0, "554 5.0.0", "Microsoft Graph refused the message",
     "Graph refused the request", NULL, NULL},
};

void graph_sanitize(char *s)
{
    char *jwt = strstr(s, "eyJ");
    if (jwt)
        *jwt = '\0';
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '"' || *s == '\\')
            *s = '_';
}

static void copy_code(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; src && *src && n + 1 < cap; src++) {
        char c = *src;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '.' || c == '-')
            dst[n++] = c;
    }
    dst[n] = '\0';
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
    graph_sanitize(dst);
}

static const char *json_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int graph_error_parse(const char *body, size_t len, struct graph_error *e)
{
    memset(e, 0, sizeof(*e));
    if (!body || len == 0)
        return 0;
    if (len > GRAPH_ERROR_BODY_MAX)
        len = GRAPH_ERROR_BODY_MAX;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root)
        return 0;
    int found = 0;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (cJSON_IsObject(err)) {
        found = 1;
        copy_code(e->code, sizeof(e->code), json_str(err, "code"));
        copy_text(e->message, sizeof(e->message), json_str(err, "message"));
        const cJSON *inner = cJSON_GetObjectItemCaseSensitive(err, "innerError");
        if (!cJSON_IsObject(inner))
            inner = cJSON_GetObjectItemCaseSensitive(err, "innererror");
        if (cJSON_IsObject(inner)) {
            copy_code(e->inner_code, sizeof(e->inner_code), json_str(inner, "code"));
            const char *rid = json_str(inner, "request-id");
            copy_text(e->request_id, sizeof(e->request_id),
                      rid ? rid : json_str(inner, "requestId"));
        }
    }
    cJSON_Delete(root);
    return found;
}

/* needle (lower case) in hay, ignoring case */
static int contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    for (; *hay; hay++) {
        size_t k = 0;
        while (k < nl && hay[k] &&
               (hay[k] >= 'A' && hay[k] <= 'Z' ? hay[k] - 'A' + 'a' : hay[k]) == needle[k])
            k++;
        if (k == nl)
            return 1;
    }
    return 0;
}

static const struct graph_explanation *lookup(long status, const char *code, const char *message,
                                              enum graph_step step)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const struct graph_explanation *t = &table[i];
        if (t->steps && !(t->steps & STEP_BIT(step)))
            continue;
        if (t->code && strcasecmp(t->code, code) != 0)
            continue;
        if (t->fragment && !contains_nocase(message, t->fragment))
            continue;
        if (t->status && (t->status_class ? t->status / 100 != status / 100 : t->status != status))
            continue;
        return t;
    }
    return NULL;
}

/* text with {mailbox} (sanitised) appended to dst at *n, cut to cap. */
static void fill(char *dst, size_t cap, size_t *n, const char *text, const char *mailbox)
{
    char mb[256];
    copy_text(mb, sizeof(mb), mailbox && *mailbox ? mailbox : "the mailbox");
    while (*text && *n + 1 < cap) {
        if (strncmp(text, "{mailbox}", 9) == 0) {
            for (const char *m = mb; *m && *n + 1 < cap; m++)
                dst[(*n)++] = *m;
            text += 9;
        } else {
            dst[(*n)++] = *text++;
        }
    }
    dst[*n] = '\0';
}

void graph_explain_answer(long status, const char *body, size_t len, enum graph_step step,
                          const char *mailbox, int64_t retry_after_ms, struct graph_outcome *o)
{
    struct graph_error e;
    char code[80] = "", wait[48] = "";
    size_t n = 0;

    o->http_status = status;
    o->retry_after_ms = 0;
    o->code[0] = o->reply[0] = o->explain[0] = '\0';
    o->conn_failure = 0;
    graph_error_parse(body, len, &e);
    snprintf(o->code, sizeof(o->code), "%s", e.code);
    if (status >= 200 && status < 300) {
        o->status = GRAPH_OK;
        snprintf(o->reply, sizeof(o->reply), "250 2.0.0 Accepted by Microsoft Graph");
        return;
    }
    const struct graph_explanation *t = lookup(status, e.code, e.message, step);
    if (!t) { /* 1xx, 3xx, or beyond 599: nothing Graph answers; try again later */
        o->status = GRAPH_TEMP;
        snprintf(o->reply, sizeof(o->reply),
                 "451 4.3.0 Unexpected answer from Microsoft Graph "
                 "(HTTP %ld)",
                 status);
        return;
    }
    o->status = t->outcome;
    o->conn_failure = t->conn_failure;
    if ((status == 429 || status == 503) && retry_after_ms > 0) {
        o->retry_after_ms = retry_after_ms;
        snprintf(wait, sizeof(wait), ", retry after %lld s",
                 (long long)((retry_after_ms + 999) / 1000));
    }
    if (e.code[0])
        snprintf(code, sizeof(code), ": %s", e.code);
    /* Graph's own message, sanitised and bounded, after ours */
    snprintf(o->reply, sizeof(o->reply), "%s %s (HTTP %ld%s)%s%s%s", t->reply, t->text, status,
             code, wait, e.message[0] ? ": " : "", e.message);
    graph_sanitize(o->reply);
    fill(o->explain, sizeof(o->explain), &n, t->meaning, mailbox);
    if (t->fix) {
        fill(o->explain, sizeof(o->explain), &n, "; fix: ", NULL);
        fill(o->explain, sizeof(o->explain), &n, t->fix, mailbox);
    }
    graph_sanitize(o->explain);
}

void graph_explain_no_answer(const char *err, int timed_out, struct graph_outcome *o)
{
    char e[200];
    copy_text(e, sizeof(e), err && *err ? err : "no answer");
    o->status = GRAPH_TEMP;
    o->conn_failure = 1;
    o->http_status = 0;
    o->retry_after_ms = 0;
    o->code[0] = '\0';
    snprintf(
        o->reply, sizeof(o->reply), "451 4.4.%d %s: %s", timed_out ? 2 : 1,
        timed_out ? "Microsoft Graph did not answer in time" : "No answer from Microsoft Graph", e);
    snprintf(o->explain, sizeof(o->explain), "%s",
             timed_out ? "the request's time ([upstream] timeout) passed without Graph's answer"
                       : "Graph could not be reached: check DNS, the network, http_proxy and "
                         "the CA file");
}
