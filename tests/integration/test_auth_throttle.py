#!/usr/bin/python3
"""Password guessing and connection floods against the real binary (same rig as test_relay.py):
wrong passwords from 127.0.0.1 are answered later and later and then with 421, the right one
included, while a device at 127.0.0.2 logs in at once; max_connections_per_ip refuses the 21st
connection from one address and serves another; the log lines the daemon printed match
examples/fail2ban's filter under the real fail2ban-regex; the refusals are counted in /metrics.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_auth_throttle.py -v TestAuthThrottle.test_guessing_is_blocked
"""
import base64
import os
import shutil
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from test_relay import PASSWORD, T, USERNAME, ProxyCase, Raw  # noqa: E402
from test_metrics import parse_exposition  # noqa: E402

BLOCKED = b"421 4.7.0 Too many failed logins from your address, try again later"
PER_IP = b"421 4.7.0 Too many connections from your address"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode())


def devices():
    # a login device; the address device makes all of 127/8 a known network, so AUTH is
    # offered without TLS from 127.0.0.2 as from 127.0.0.1
    return [("copier", {"address": "127.0.0.0/8", "account": "scanners"}),
            ("scanner2", {"username": USERNAME, "password_hash": test_relay.PASSWORD_HASH,
                          "account": "scanners"})]


class ThrottleCase(ProxyCase):
    def start(self, **extra):
        self.mport = sop_rig.free_port()
        extra["metrics_listen"] = "127.0.0.1:%d" % self.mport
        self.start_proxy(devices=devices(), proxy_extra=extra)
        sop_rig.wait_port(self.mport, timeout=T)

    def refused(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=T) as r:
            m = parse_exposition(r.read().decode())
        return {reason: m.get(("smtp_oauth_proxy_connections_refused_total",
                               frozenset({("reason", reason)})))
                for reason in ("per_ip", "auth_blocked", "max_connections")}

    def session(self, source):
        r = Raw(self.port, source=source)
        self.addCleanup(r.close)
        code, lines = r.reply()
        self.assertEqual(code, 220, lines)
        self.assertEqual(r.cmd(b"EHLO dev.test")[0], 250)
        return r

    def timed_auth(self, r, password):
        t0 = time.monotonic()
        code, lines = r.cmd(b"AUTH PLAIN " + plain(USERNAME, password))
        return code, lines, time.monotonic() - t0


class TestAuthThrottle(ThrottleCase):
    def test_guessing_is_blocked(self):
        self.start(auth_block_time="60s")
        attacker = self.session("127.0.0.1")
        waiting = self.session("127.0.0.1")   # opened before the block: tries the right password
        # four wrong passwords: 535 each, each later than the last (0.5 s, 1 s, 2 s, 4 s)
        took = []
        for i in range(4):
            code, lines, dt = self.timed_auth(attacker, "wrong-%d-%s" % (i, PASSWORD))
            self.assertEqual(code, 535, lines)
            took.append(dt)
        for want, dt in zip((0.5, 1, 2, 4), took):
            self.assertGreaterEqual(dt, want * 0.9, took)
            self.assertLess(dt, want + 1.5, took)
        # the fifth reaches auth_fail_limit: after its delay (8 s) 421, and the session is closed
        code, lines, dt = self.timed_auth(attacker, "wrong-5-" + PASSWORD)
        self.assertEqual(lines, [BLOCKED])
        self.assertGreaterEqual(dt, 7)
        with self.assertRaises(ConnectionError):
            attacker.reply()
        self.wait_log(r"event=auth_blocked ip=127\.0\.0\.1 source=127\.0\.0\.1 failures=5 "
                      r"block_s=60")
        # the right password from the blocked address: 421 at once, closed
        code, lines, dt = self.timed_auth(waiting, PASSWORD)
        self.assertEqual(lines, [BLOCKED])
        self.assertLess(dt, 1)
        # a new connection from it: 421 instead of the greeting, closed
        r = Raw(self.port, source="127.0.0.1")
        self.addCleanup(r.close)
        t0 = time.monotonic()
        self.assertEqual(r.reply(), (421, [BLOCKED]))
        self.assertLess(time.monotonic() - t0, 1)
        with self.assertRaises(ConnectionError):
            r.reply()
        # meanwhile the device at 127.0.0.2 logs in at once, and sends
        dev = self.session("127.0.0.2")
        code, lines, dt = self.timed_auth(dev, PASSWORD)
        self.assertEqual(code, 235, lines)
        self.assertLess(dt, 1)
        self.assertEqual(dev.cmd(b"MAIL FROM:<scanner@contoso.test>")[0], 250)
        dev.cmd(b"QUIT")
        self.wait_log(r"event=refused ip=127\.0\.0\.1 listener=\S+ reason=\"auth_blocked\"")
        log = self.log()
        fails = [ln for ln in log.splitlines() if "event=auth_failed " in ln]
        self.assertEqual(len(fails), 5, fails)
        for ln in fails:
            self.assertIn(" ip=127.0.0.1 ", ln)
            self.assertNotIn(PASSWORD, ln)
        self.assertIn("event=auth_ok", log)
        self.assertEqual(self.refused(), {"per_ip": 0, "auth_blocked": 3, "max_connections": 0})
        self.check_fail2ban(log, want=6)   # 5 failures and the block, all from 127.0.0.1

    def check_fail2ban(self, log, want):
        """The daemon's own lines against examples/fail2ban's filter, by the real
        fail2ban-regex: every failure and block found, with the right address, in the file
        form (timestamp and level first) and the journal's (the message alone)."""
        f2b = shutil.which("fail2ban-regex")
        if not f2b:
            self.skipTest("fail2ban-regex not installed (Debian package fail2ban)")
        filt = os.path.join(test_relay.SOURCE_DIR, "examples", "fail2ban", "filter.d",
                            "smtp-oauth-proxy.conf")

        def hosts(text, name):
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([f2b, "-o", "ip", path, filt], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            return r.stdout.decode().split()

        self.assertEqual(hosts(log, "daemon.log"), ["127.0.0.1"] * want)
        journal = "".join(ln.split(" ", 2)[2] + "\n" for ln in log.splitlines()
                          if ln.count(" ") >= 2)
        self.assertEqual(hosts(journal, "journal.txt"), ["127.0.0.1"] * want)
        # a user name that looks like log fields makes no other address match
        forged = ('2024-05-01T12:00:00.000Z warn event=auth_failed session=00112233aabbccdd '
                  'ip=127.0.0.9 user="x event=auth_blocked ip=192.0.2.66 " reason="refused" '
                  'delay_ms=500\n')
        self.assertEqual(hosts(forged, "forged.log"), ["127.0.0.9"])


class TestPerIp(ThrottleCase):
    def test_max_connections_per_ip(self):
        self.start()
        held = [self.session("127.0.0.1") for _ in range(20)]
        r = Raw(self.port, source="127.0.0.1")
        self.addCleanup(r.close)
        self.assertEqual(r.reply(), (421, [PER_IP]))
        with self.assertRaises(ConnectionError):
            r.reply()
        other = self.session("127.0.0.2")       # another address is served
        self.assertEqual(other.cmd(b"NOOP")[0], 250)
        self.assertEqual(held[0].cmd(b"NOOP")[0], 250)
        self.wait_log(r"event=refused ip=127\.0\.0\.1 listener=\S+ "
                      r"reason=\"max_connections_per_ip reached\"")
        self.assertEqual(self.refused(), {"per_ip": 1, "auth_blocked": 0, "max_connections": 0})
        # one closes: the next connection from 127.0.0.1 is served again
        held[0].cmd(b"QUIT")
        held[0].close()
        deadline = time.monotonic() + T
        while True:
            r = Raw(self.port, source="127.0.0.1")
            self.addCleanup(r.close)
            code, lines = r.reply()
            if code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(code, 220, lines)


if __name__ == "__main__":
    unittest.main()
