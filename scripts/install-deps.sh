#!/usr/bin/env bash
# Install everything smtp-oauth-proxy needs to build, test and run its demo (Debian 12).
# Idempotent: does nothing when every package is already there.
set -euo pipefail

# Every package named explicitly, with what needs it: apt runs with --no-install-recommends, so
# nothing arrives as a Recommends (swaks' TLS did once, on one machine only). CI (.ci/run) proves
# this list on a fresh minbase Debian 12 root.
PKGS=(
    # build: compiler, CMake, and the libraries the proxy links
    build-essential cmake pkg-config
    libevent-dev libssl-dev libcurl4-openssl-dev libcjson-dev libjwt-dev libinih-dev
    libcrypt-dev libsystemd-dev
    libgmime-3.0-dev                 # MIME for Graph: large attachments split off, recipients read
    # unit tests, lint, and the fuzz build (clang's libFuzzer and sanitizer runtimes)
    libcmocka-dev clang-format cppcheck clang libclang-rt-14-dev
    llvm                             # llvm-symbolizer: readable stacks in sanitizer and fuzz reports
    # integration tests and the demo: real peers on loopback
    dovecot-core dovecot-submissiond # the XOAUTH2/PLAIN submission upstream
    postfix                          # smtp-sink, smtp-source
    swaks libnet-ssleay-perl         # swaks does STARTTLS/SMTPS only with Net::SSLeay
    curl openssl whois               # whois: mkpasswd for device password hashes
    util-linux                       # unshare: test_upstream_kinds gives one proxy its own resolv.conf
    mount                            # mount --bind, in that namespace
    python3 python3-aiosmtpd python3-cryptography python3-jwt
    # the service tests: systemd-analyze, journald, journalctl; the man pages rendered
    systemd groff-base man-db
    fail2ban                         # fail2ban-regex: test_auth_throttle checks examples/fail2ban's filter
    haproxy                          # test_haproxy: two instances behind it, PROXY protocol v2
    dnsmasq-base                     # /usr/sbin/dnsmasq, no service: test_recipient_policy's DNS server (FCrDNS)
    prometheus                       # promtool: test_metrics and test_account_budget lint /metrics
)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
# dovecot and postfix would start the system's own services on install; our tests run their own
# instances, so keep the system ones from starting while installing.
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
fi
trap '[ $policy_added -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
