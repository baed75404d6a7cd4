#!/usr/bin/env bash
# Run smtp-oauth-proxy end to end on this machine, on loopback only:
#   an IdP stand-in for Entra ID, Dovecot's submission server as the XOAUTH2 upstream (its own
#   instance, never the system's), a sink behind it, and the proxy with a generated config in
#   .demo/. A "copier" sends one message by plain SMTP (known by its address) and a "scanner" one
#   with AUTH LOGIN over STARTTLS. Prints what the devices saw, the proxy's log lines and the
#   messages as they arrived, then stops everything. Exits non-zero if a message did not arrive.
#
#   ./scripts/demo.sh            (from the repository root; needs root or sudo for install-deps)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target smtp-oauth-proxy >/dev/null

# The rig (tests/integration/sop_rig.py) starts and stops every peer; .demo/ keeps the config,
# the logs (.demo/proxy.log, .demo/rig/dovecot/dovecot.log) and the sink (.demo/rig/sink/).
exec /usr/bin/python3 tests/integration/sop_rig.py demo --binary build/smtp-oauth-proxy --dir .demo
