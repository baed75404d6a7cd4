#!/usr/bin/env bash
# Install everything smtp-oauth-proxy needs to build, test and run its demo (Debian 12).
# Idempotent: does nothing when every package is already there.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev clang-format cppcheck valgrind
      libevent-dev libssl-dev libcurl4-openssl-dev libcjson-dev libjwt-dev libcmocka-dev
      libinih-dev libcrypt-dev libsystemd-dev systemd groff-base man-db
      dovecot-core dovecot-submissiond postfix swaks curl openssl whois
      python3 python3-aiosmtpd python3-cryptography python3-jwt)

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
