#!/usr/bin/env bash
# The folders are layers (docs/architecture.md): a file may include headers of its own folder and
# of the folders before it in LAYERS, never of one after it. Prints every include that points
# the wrong way and exits 1 if there is one. Part of the lint in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=(common store oauth proxy/smtp proxy/config proxy/runtime proxy/upstream proxy/graph proxy/delivery
        proxy/server proxy/admin proxy)
rank() { # folder of a path -> its index in LAYERS
    local d=$1 i
    for i in "${!LAYERS[@]}"; do [ "${LAYERS[$i]}" = "$d" ] && { echo "$i"; return; }; done
    echo -1
}
bad=0
while IFS= read -r f; do
    from=$(rank "$(dirname "$f")")
    [ "$from" -ge 0 ] || continue
    while IFS= read -r inc; do
        to=$(rank "$(dirname "$inc")")
        if [ "$to" -lt 0 ] || [ "$to" -gt "$from" ]; then
            echo "$f includes $inc: $(dirname "$inc") is not below $(dirname "$f")" >&2
            bad=1
        fi
    done < <(sed -n 's/^#include "\(\(common\|store\|oauth\|proxy\)\/[^"]*\)".*/\1/p' "$f")
done < <(find common store oauth proxy -name '*.[ch]' | sort)
[ $bad -eq 0 ] && echo "layers: every include points down"
exit $bad
