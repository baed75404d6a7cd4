/* Which upstream refusals say "this looks like spam" or "this sender's reputation is bad"
 * (block_after_refusals, docs/device-limits.md): Exchange Online's enhanced codes for spam,
 * banned senders and IP or tenant reputation, and a 5.7.1 whose text says spam. Pure. */
#ifndef SOP_SPAM_REPLY_H
#define SOP_SPAM_REPLY_H

/* 1 when a permanent refusal (code 500..599, its enhanced code "5.7.708" or "" / NULL, its text
 * or NULL; only the first 4096 bytes are looked at) is a spam or reputation refusal; else 0. */
int spam_reply_match(int code, const char *enhanced, const char *text);
/* The same for a reply as text ("550 5.7.708 Access denied ...", "550-5.7.1 ...": its first
 * line): the code, then the enhanced code when the next word is one. NULL: 0. */
int spam_reply_line_match(const char *line);

#endif
