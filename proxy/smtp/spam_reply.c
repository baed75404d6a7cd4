/* The spam and reputation refusals; see spam_reply.h. From Microsoft's "Email non-delivery
 * reports and SMTP errors in Exchange Online" and its 5.7.700-5.7.750 page: 5.7.350 (the remote
 * server detected the message as spam), 5.7.501 (spam abuse detected), 5.7.502 and 5.7.503
 * (banned sender), 5.7.511 (banned sender: the account sent spam), 5.7.513 (the client host is
 * blocked: IP reputation), 5.7.705 (the tenant sent too much spam or bulk mail), 5.7.708 (traffic
 * not accepted from this IP: reputation), 5.7.750 (client blocked from sending from
 * unregistered domains), and "5.7.1 ... spam ..." (content filtering, a blocklist). Not in the
 * list, as they are an admin's rule rather than a verdict on what the device sent: 5.7.520
 * (external forwarding not allowed) and 5.7.703 (recipient on the tenant's block list). */
#include "proxy/smtp/spam_reply.h"

#include <string.h>
#include <strings.h>

#define SPAM_TEXT_MAX 4096

static const char *const spam_codes[] = {"5.7.350", "5.7.501", "5.7.502", "5.7.503", "5.7.511",
                                         "5.7.513", "5.7.705", "5.7.708", "5.7.750"};

static int text_says_spam(const char *text)
{
    static const char word[] = "spam";
    size_t len = strnlen(text, SPAM_TEXT_MAX);
    for (size_t i = 0; i + sizeof(word) - 1 <= len; i++)
        if (strncasecmp(text + i, word, sizeof(word) - 1) == 0)
            return 1;
    return 0;
}

int spam_reply_match(int code, const char *enhanced, const char *text)
{
    if (code < 500 || code > 599 || !enhanced)
        return 0;
    for (size_t i = 0; i < sizeof(spam_codes) / sizeof(spam_codes[0]); i++)
        if (strcmp(enhanced, spam_codes[i]) == 0)
            return 1;
    return strcmp(enhanced, "5.7.1") == 0 && text && text_says_spam(text);
}

int spam_reply_line_match(const char *line)
{
    char enhanced[16] = "";
    if (!line || strspn(line, "0123456789") != 3 || (line[3] != ' ' && line[3] != '-'))
        return 0;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    const char *p = line + 4;
    size_t n = strspn(p, "0123456789.");
    if (n > 0 && n < sizeof(enhanced) && (p[n] == ' ' || p[n] == '\0' || p[n] == '\r')) {
        memcpy(enhanced, p, n);
        enhanced[n] = '\0';
        p += n;
    }
    return spam_reply_match(code, enhanced, p);
}
