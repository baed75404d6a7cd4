/* libFuzzer target for proxy/runtime/account_budget_file.c: STATE_DIR/account-budget.state as
 * any bytes. A refused file leaves the budget as it was; an accepted one is written out and read
 * back to the same figures (every account, the used count at a few times). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/runtime/account_budget.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* a fixed clock: the seeds' minutes are near it */
#define NOW ((int64_t)29485930 * 60)

static const char *const names[] = {"scanners", "a", "m-2.x", "nobody"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

static void figures(const struct account_budget *b, uint64_t out[NNAMES][3])
{
    for (size_t i = 0; i < NNAMES; i++) {
        out[i][0] = account_budget_used(b, names[i], NOW);
        out[i][1] = account_budget_used(b, names[i], NOW + 3600);
        out[i][2] = account_budget_used(b, names[i], NOW + 86400);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    uint64_t before[NNAMES][3], after[NNAMES][3], again[NNAMES][3];
    struct account_budget *b = account_budget_new(), *c = account_budget_new();
    if (!b || !c)
        abort();
    account_budget_add(b, "scanners", 7, NOW - 600);
    figures(b, before);
    int r = account_budget_parse(b, (const char *)data, size, NOW, err, sizeof(err));
    if (r != 0 && r != -1)
        abort();
    figures(b, after);
    if (r < 0) {
        if (!err[0] || memcmp(before, after, sizeof(before)) != 0)
            abort(); /* a refused file changed nothing and said why */
    } else {
        size_t len = 0;
        char *text = account_budget_text(b, NOW, &len);
        if (!text || account_budget_parse(c, text, len, NOW, err, sizeof(err)) != 0)
            abort(); /* what the daemon writes, it reads back */
        free(text);
        figures(c, again);
        if (memcmp(after, again, sizeof(after)) != 0)
            abort();
    }
    account_budget_free(b);
    account_budget_free(c);
    return 0;
}
