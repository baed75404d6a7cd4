/* The submitted copy's recipients and sender (graph_mime.h): Graph sends to the addresses in
 * To, Cc and Bcc, so these name exactly the envelope's recipients. GMime's address lists parse
 * the headers (groups, encoded words, odd syntax); To and Cc are always written again from what
 * GMime understood, filtered, so no text GMime did not read as an address can reach Graph. */
#include <stdio.h>
#include <string.h>

#include "proxy/graph/graph_mime_int.h"

/* The envelope: its addresses, lowercased, to their first index (+1); which were met in To/Cc. */
struct gm_env {
    GHashTable *set;
    unsigned char *found;
};

#define GM_GROUP_DEPTH 4 /* groups inside groups (not RFC 5322, GMime may still build them) */

static int gm_env_lookup(struct gm_env *e, const char *addr)
{
    char *l;
    gpointer v;
    if (!addr || !*addr)
        return 0;
    l = g_ascii_strdown(addr, -1);
    v = g_hash_table_lookup(e->set, l);
    g_free(l);
    if (!v)
        return 0;
    e->found[GPOINTER_TO_SIZE(v) - 1] = 1;
    return 1;
}

static int gm_env_has(struct gm_env *e, InternetAddressMailbox *mb)
{
    return gm_env_lookup(e, internet_address_mailbox_get_addr(mb)) ||
           gm_env_lookup(e, internet_address_mailbox_get_idn_addr(mb));
}

static unsigned gm_count_mailboxes(InternetAddressList *l, int depth)
{
    unsigned n = 0;
    int len = internet_address_list_length(l);
    for (int i = 0; i < len; i++) {
        InternetAddress *ia = internet_address_list_get_address(l, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia))
            n++;
        else if (INTERNET_ADDRESS_IS_GROUP(ia) && depth < GM_GROUP_DEPTH)
            n += gm_count_mailboxes(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)),
                                    depth + 1);
    }
    return n;
}

/* The addresses of in that are envelope recipients (a new list). A group keeps its name and its
 * envelope members; one left without members goes (an empty group, "undisclosed-recipients:;",
 * stays). */
static InternetAddressList *gm_filter(InternetAddressList *in, struct gm_env *e, unsigned *dropped,
                                      int depth)
{
    InternetAddressList *out = internet_address_list_new();
    int len = internet_address_list_length(in);
    for (int i = 0; i < len; i++) {
        InternetAddress *ia = internet_address_list_get_address(in, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
            if (gm_env_has(e, INTERNET_ADDRESS_MAILBOX(ia)))
                internet_address_list_add(out, ia);
            else
                (*dropped)++;
        } else if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            InternetAddressList *members =
                internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia));
            int nm = internet_address_list_length(members);
            InternetAddressList *kept;
            if (depth < GM_GROUP_DEPTH) {
                kept = gm_filter(members, e, dropped, depth + 1);
            } else {
                kept = internet_address_list_new();
                *dropped += gm_count_mailboxes(members, depth);
            }
            if (nm == 0 || internet_address_list_length(kept) > 0) {
                InternetAddress *g = internet_address_group_new(internet_address_get_name(ia));
                internet_address_group_set_members(INTERNET_ADDRESS_GROUP(g), kept);
                internet_address_list_add(out, g);
                g_object_unref(g);
            }
            g_object_unref(kept);
        }
    }
    return out;
}

static void gm_remove_all(GMimeHeaderList *hl, const char *name)
{
    while (g_mime_header_list_remove(hl, name))
        ;
}

/* To or Cc: written again with the envelope's addresses only, or removed when none is left. */
static void gm_rewrite_list(struct graph_mime *m, GMimeAddressType type, const char *name,
                            struct gm_env *e)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m->msg));
    InternetAddressList *list, *kept;
    if (!g_mime_header_list_contains(hl, name))
        return;
    list = g_mime_message_get_addresses(m->msg, type);
    kept = gm_filter(list, e, &m->dropped, 0);
    if (internet_address_list_length(kept) == 0) {
        gm_remove_all(hl, name);
    } else {
        /* one change of the list each: GMime writes the header again on every change */
        internet_address_list_clear(list);
        internet_address_list_append(list, kept);
    }
    g_object_unref(kept);
}

/* An envelope address as the proxy's SMTP side gives it: no control character (a CR or LF
 * would start a header of its own), not empty, not absurdly long. */
static int gm_rcpt_ok(const char *r)
{
    size_t n = r ? strlen(r) : 0;
    if (n == 0 || n > 512)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f)
            return 0;
    return 1;
}

int gm_rewrite_rcpts(struct graph_mime *m, const struct graph_mime_opts *o, char *err,
                     size_t errlen)
{
    struct gm_env e;
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m->msg));
    InternetAddressList *bcc;
    size_t *first;
    int rc = 0;

    for (size_t i = 0; i < o->nrcpts; i++) {
        if (!gm_rcpt_ok(o->rcpts[i])) {
            snprintf(err, errlen, "unusable envelope recipient #%zu", i + 1);
            return -1;
        }
    }
    e.set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    e.found = g_malloc0(o->nrcpts);
    first = g_malloc0_n(o->nrcpts, sizeof(*first));
    for (size_t i = 0; i < o->nrcpts; i++) {
        char *l = g_ascii_strdown(o->rcpts[i], -1);
        gpointer v = g_hash_table_lookup(e.set, l);
        if (v) {
            first[i] = GPOINTER_TO_SIZE(v) - 1; /* a repeated recipient: once */
            g_free(l);
        } else {
            first[i] = i;
            g_hash_table_insert(e.set, l, GSIZE_TO_POINTER(i + 1));
        }
    }

    gm_rewrite_list(m, GMIME_ADDRESS_TYPE_TO, "To", &e);
    gm_rewrite_list(m, GMIME_ADDRESS_TYPE_CC, "Cc", &e);
    gm_remove_all(hl, "Bcc"); /* the device's Bcc: is replaced */
    bcc = internet_address_list_new();
    for (size_t i = 0; i < o->nrcpts; i++) {
        if (first[i] != i || e.found[i])
            continue;
        InternetAddress *mb = internet_address_mailbox_new(NULL, o->rcpts[i]);
        internet_address_list_add(bcc, mb);
        g_object_unref(mb);
        m->bcc_added++;
    }
    if (m->bcc_added)
        internet_address_list_append(g_mime_message_get_addresses(m->msg, GMIME_ADDRESS_TYPE_BCC),
                                     bcc);
    g_object_unref(bcc);
    g_free(first);
    g_free(e.found);
    g_hash_table_destroy(e.set);
    return rc;
}

/* A From: value that says something: a byte besides white space (docs/header-rewrite.md). */
static int gm_usable(const char *raw)
{
    for (; raw && *raw; raw++)
        if (*raw != ' ' && *raw != '\t' && *raw != '\r' && *raw != '\n')
            return 1;
    return 0;
}

/* raw without its last line end */
static void gm_append_value(GString *s, const char *raw)
{
    size_t n = strlen(raw);
    while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == '\r'))
        n--;
    g_string_append_len(s, raw, (gssize)n);
}

int gm_rewrite_from(struct graph_mime *m, const char *mailbox, char *err, size_t errlen)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m->msg));
    int n = g_mime_header_list_get_count(hl), first = -1, nrt = 0;
    int has_rt = g_mime_header_list_contains(hl, "Reply-To");
    GString *rt;
    char *v;

    if (!gm_rcpt_ok(mailbox) || strchr(mailbox, '<') || strchr(mailbox, '>')) {
        snprintf(err, errlen, "unusable sender_rewrite mailbox");
        return -1;
    }
    rt = g_string_new(NULL);
    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *raw;
        if (g_ascii_strcasecmp(g_mime_header_get_name(h), "From") != 0)
            continue;
        if (first < 0)
            first = i;
        raw = g_mime_header_get_raw_value(h);
        if (has_rt || !gm_usable(raw))
            continue;
        /* the first as Reply-To's value, each later one as a continuation line " ," + value */
        if (nrt++)
            g_string_append(rt, "\n ,");
        gm_append_value(rt, raw);
    }
    if (first < 0) { /* no From: at all: the mailbox's, first (docs/header-rewrite.md) */
        g_string_free(rt, TRUE);
        v = g_strdup_printf("<%s>", mailbox);
        g_mime_header_list_prepend(hl, "From", v, NULL);
        g_free(v);
        v = g_strdup_printf(" <%s>\n", mailbox); /* written as it is, as below */
        g_mime_header_set_raw_value(g_mime_header_list_get_header_at(hl, 0), v);
        g_free(v);
        return 0;
    }
    for (int i = n - 1; i > first; i--)
        if (g_ascii_strcasecmp(g_mime_header_get_name(g_mime_header_list_get_header_at(hl, i)),
                               "From") == 0)
            g_mime_header_list_remove_at(hl, i);
    /* GMime has no way to insert a field after another: the Reply-To: line is written as part
     * of From:'s raw value, so it follows From: as docs/header-rewrite.md has it. Nothing
     * changes From: after this (GMime writes a raw value as it is). */
    v = g_strdup_printf(" <%s>\n", mailbox);
    if (nrt) {
        size_t first_line = strcspn(rt->str, "\r\n");
        GString *both = g_string_new(v);
        g_string_append(both, "Reply-To:");
        if (9 + first_line > 998) /* the longer name would pass 998: fold after it */
            g_string_append(both, rt->str[0] == ' ' || rt->str[0] == '\t' ? "\n" : "\n ");
        g_string_append(both, rt->str);
        g_string_append_c(both, '\n');
        g_free(v);
        v = g_string_free(both, FALSE);
    }
    /* "From :" (white space before the colon, RFC 5322 4.5: GMime reads it as From:) would be
     * written back with its name as it was: a From: of our own takes its place, first (GMime
     * cannot insert a field elsewhere). */
    const char *raw_name = g_mime_header_get_raw_name(g_mime_header_list_get_header_at(hl, first));
    if (raw_name && raw_name[strcspn(raw_name, " \t")] != '\0') {
        char *plain = g_strdup_printf("<%s>", mailbox);
        g_mime_header_list_remove_at(hl, first);
        g_mime_header_list_prepend(hl, "From", plain, NULL);
        g_free(plain);
        first = 0;
    }
    g_mime_header_set_raw_value(g_mime_header_list_get_header_at(hl, first), v);
    g_free(v);
    g_string_free(rt, TRUE);
    return 0;
}
