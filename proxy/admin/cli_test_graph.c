/* `test ACCOUNT --to ADDR` for an account with upstream = graph: the test message made ready as
 * the daemon makes every message ready (graph_mime.h) and sent by the daemon's Graph client
 * (graph_client.h) with the test's own token, each request and answer printed (the path only:
 * never the token, never an upload URL's query), Graph's refusal with what it means and what to
 * change. */
#include <stdio.h>

#include <event2/event.h>

#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "proxy/graph/graph_client.h"
#include "proxy/graph/graph_mime.h"

struct graph_test {
    struct event_base *base;
    int done;
    struct graph_outcome out;
};

static void on_trace(void *arg, const char *method, const char *path, long status, const char *code)
{
    (void)arg;
    if (status == 0)
        printf("-> %s %s\n", method, path);
    else
        printf("<- %ld%s%s\n", status, code && code[0] ? " " : "", code ? code : "");
    fflush(stdout);
}

static void on_sent(void *arg, const struct graph_outcome *o)
{
    struct graph_test *g = arg;
    g->out = *o;
    g->done = 1;
    event_base_loopbreak(g->base);
}

int cli_test_graph(const struct config *cfg, const struct cfg_account *a, struct cli_offline *o,
                   const char *msg, size_t len, const char *to)
{
    char err[512];
    const char *rcpts[1] = {to};
    struct graph_mime_opts mo = {
        .rcpts = rcpts,
        .nrcpts = 1,
        .from_rewrite = a->sender_rewrite == SENDER_REWRITE_HEADER ? a->mailbox : NULL,
    };
    struct graph_mime *m = graph_mime_open_mem(msg, len, &mo, err, sizeof(err));
    if (!m) {
        printf("FAILED: the test message cannot be prepared: %s\n", err);
        return -1;
    }
    struct graph_pools *ps = graph_pools_new(o->base, NULL);
    struct graph_pool *p = ps ? graph_pools_get(ps, a->name) : NULL;
    struct graph_test g = {.base = o->base};
    struct graph_send *s =
        p ? graph_send_start_tokens(p, o->cache, cfg->upstream_timeout, a, m, "test", on_sent, &g)
          : NULL;
    if (!s) {
        printf("FAILED: out of memory\n");
        graph_pools_free(ps);
        graph_mime_free(m);
        return -1;
    }
    graph_send_set_trace(s, on_trace, &g);
    printf("message: to %s, %s\n", to,
           graph_mime_natt(m) ? "a draft with uploaded attachments" : "one sendMail request");
    event_base_dispatch(o->base);
    if (!g.done) {
        graph_send_cancel(s);
        printf("FAILED: the event loop ended before Graph answered\n");
    } else {
        printf("result: %s (%u request%s)\n", g.out.reply, g.out.requests,
               g.out.requests == 1 ? "" : "s");
        if (g.out.explain[0])
            printf("  meaning: %s\n", g.out.explain);
    }
    graph_pools_free(ps);
    graph_mime_free(m);
    return g.done && g.out.status == GRAPH_OK ? 0 : -1;
}
