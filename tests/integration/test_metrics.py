#!/usr/bin/python3
"""metrics_listen with the real binary (same rig and harness as test_relay.py): traffic of known
shape goes through the proxy, then /metrics is scraped over HTTP, parsed as Prometheus' text
exposition format, and every counter must equal what was sent. /healthz answers 200 while the
proxy serves and 503 "stopping" once SIGTERM arrived while a message is still in flight.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_metrics.py -v TestMetrics.test_counters_match_traffic
"""
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from test_relay import MSG, PASSWORD, T, USERNAME, ProxyCase  # noqa: E402

P = "smtp_oauth_proxy_"
LINE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def parse_exposition(text):
    """{(name, frozenset(labels.items())): value}; checks HELP/TYPE come before each metric."""
    series, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            if kind not in ("counter", "gauge"):
                raise ValueError("unexpected type %r" % line)
            typed.add(name)
            continue
        if line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if not m:
            raise ValueError("not an exposition line: %r" % line)
        name, labels_text, value = m.groups()
        if name not in typed:
            raise ValueError("%s has no TYPE line before it" % name)
        labels, pos = {}, 0
        while labels_text and pos < len(labels_text):
            lm = LABEL_RE.match(labels_text, pos)
            if not lm:
                raise ValueError("bad labels in %r" % line)
            labels[lm.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n"
                                         else e.group(1), lm.group(2))
            pos = lm.end()
        key = (name, frozenset(labels.items()))
        if key in series:
            raise ValueError("duplicate series %r" % line)
        series[key] = float(value)
    return series


def promtool_check(case, text):
    """`promtool check metrics` on an exposition: Prometheus' own parser and naming lint
    (scripts/install-deps.sh installs it with the prometheus package)."""
    promtool = shutil.which("promtool")
    if not promtool:
        case.skipTest("promtool is missing: scripts/install-deps.sh installs prometheus")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=T)
    case.assertEqual(r.returncode, 0, "promtool check metrics: %s%s"
                     % (r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")))


class TestMetrics(ProxyCase):
    def start(self):
        self.mport = sop_rig.free_port()
        self.start_proxy(proxy_extra={"metrics_listen": "127.0.0.1:%d" % self.mport})
        sop_rig.wait_port(self.mport, timeout=T)

    def get(self, path):
        """(status, content type, body) of GET http://127.0.0.1:MPORT/path."""
        url = "http://127.0.0.1:%d%s" % (self.mport, path)
        try:
            with urllib.request.urlopen(url, timeout=T) as r:
                return r.status, r.headers.get("Content-Type"), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read().decode()

    def scrape(self):
        status, ctype, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
        return parse_exposition(body)

    @staticmethod
    def value(series, name, **labels):
        return series.get((P + name, frozenset(labels.items())))

    @staticmethod
    def total(series, name, **labels):
        """Sum of every series of name whose labels include these."""
        return sum(v for (n, ls), v in series.items()
                   if n == P + name and set(labels.items()) <= set(ls))

    def test_counters_match_traffic(self):
        self.start()
        listener = "127.0.0.1:%d" % self.port
        status, _, body = self.get("/healthz")
        self.assertEqual((status, body), (200, "ok\n"))

        # the harness's readiness probe was a session already
        sessions = self.value(self.scrape(), "sessions_total", listener=listener)
        self.assertGreaterEqual(sessions, 1)
        delivered, mail_sessions = 3, 0
        # delivered messages, one session each; the second also has a refused recipient
        for i in range(delivered):
            s = self.smtp()
            sessions += 1
            mail_sessions += 1
            s.ehlo("copier.test")
            self.assertEqual(s.mail("copier@contoso.test")[0], 250)
            self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
            if i == 1:
                self.assertEqual(s.rcpt("refuse@contoso.test")[0], 550)
            code, msg = s.data(MSG)
            self.assertEqual(code, 250, msg)
            s.quit()
        # a message the proxy refuses (a line over 1000 octets): 5xx at the final dot
        r = self.raw()
        r.reply()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        code, lines = r.cmd(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n.")
        sessions += 1
        mail_sessions += 1
        self.assertEqual(code // 100, 5, lines)
        r.cmd(b"QUIT")
        # failed logins: a device's username with a wrong password, and a username nobody has
        for user in (USERNAME, "nosuchuser"):
            s = self.smtp()
            sessions += 1
            s.ehlo("scanner.test")
            s.user, s.password = user, "wrong-" + PASSWORD
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.auth("PLAIN", s.auth_plain)  # one attempt (login() would try LOGIN too)
            s.quit()
        self.rig.sink_wait(delivered, T)

        # sessions close asynchronously: wait until none is open
        deadline = time.monotonic() + T
        while True:
            m = self.scrape()
            if self.value(m, "sessions_open", listener=listener) == 0 or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(self.value(m, "sessions_open", listener=listener), 0)
        self.assertEqual(self.value(m, "sessions_total", listener=listener), sessions)

        acct = {"account": "scanners"}
        self.assertEqual(self.value(m, "messages_total", result="delivered", **acct), delivered)
        self.assertEqual(self.value(m, "messages_total", result="refused", **acct), 1)
        self.assertEqual(self.value(m, "messages_total", result="deferred", **acct), 0)
        self.assertEqual(self.value(m, "relayed_bytes_total", **acct), delivered * len(MSG))

        # upstream replies: Dovecot passes the sink's "250 2.0.0 Ok: queued" and "550 5.1.1"
        self.assertEqual(self.value(m, "upstream_replies_total",
                                    **{"command": "DATA", "class": "2xx", "code": "2.0.0"}),
                         delivered)
        self.assertEqual(self.value(m, "upstream_replies_total",
                                    **{"command": "RCPT", "class": "5xx", "code": "5.1.1"}), 1)
        self.assertEqual(self.total(m, "upstream_replies_total",
                                    **{"command": "RCPT", "class": "2xx"}), delivered + 1)
        self.assertEqual(self.total(m, "upstream_replies_total",
                                    **{"command": "MAIL", "class": "2xx"}), mail_sessions)
        # one AUTH per upstream connection; the sessions came one after another, so one pooled
        # connection served every message (each later one after an RSET)
        opened = self.value(m, "upstream_connections_opened_total", **acct)
        self.assertEqual(self.total(m, "upstream_replies_total",
                                    **{"command": "AUTH", "class": "2xx"}), opened)
        self.assertEqual(opened, 1)
        self.assertEqual(self.value(m, "upstream_connection_reuses_total", **acct),
                         mail_sessions - 1)
        self.assertEqual(self.total(m, "upstream_replies_total", **{"class": "4xx"}), 0)

        # token figures, read live from the cache: one token, good for about an hour
        stats = self.rig.idp_stats()
        self.assertEqual(self.value(m, "token_requests_total", **acct),
                         sum(stats["requests"].values()))
        self.assertEqual(self.value(m, "token_requests_total", **acct), 1)
        self.assertEqual(self.value(m, "token_failures_total", **acct), 0)
        self.assertGreater(self.value(m, "token_expiry_seconds", **acct), 60)
        self.assertEqual(self.value(m, "token_reauthorize_required", **acct), 0)

        self.assertEqual(self.value(m, "auth_failures_total", device="scanner2"), 1)
        self.assertEqual(self.value(m, "auth_failures_total", device="unknown"), 1)
        # copier logs in by address only: no username, no series
        self.assertIsNone(self.value(m, "auth_failures_total", device="copier"))
        # nothing was refused at connect
        for reason in ("per_ip", "auth_blocked", "max_connections"):
            self.assertEqual(self.value(m, "connections_refused_total", reason=reason), 0)
        # no device limits set, nobody blocked: every device's series is there, at zero
        for dev in ("copier", "scanner2"):
            for limit in ("max_messages_per_hour", "max_recipients_per_day", "blocked"):
                self.assertEqual(self.value(m, "device_limit_refusals_total", device=dev,
                                            limit=limit), 0)

        # only GET/HEAD on two paths
        self.assertEqual(self.get("/")[0], 404)
        self.assertEqual(self.get("/metrics/../healthz")[0], 404)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % self.mport, data=b"x",
                                     method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=T)
        self.assertNotEqual(cm.exception.code, 200)
        cm.exception.close()

    def test_healthz_503_while_stopping(self):
        # A message in flight keeps the proxy running after SIGTERM: meanwhile /healthz says
        # 503 "stopping", so a load balancer stops sending devices here.
        self.start()
        status, _, body = self.get("/healthz")
        self.assertEqual((status, body), (200, "ok\n"))
        r = self.raw()
        r.reply()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(b"Subject: in flight\r\n\r\nfirst line\r\n")
        self.proxy.proc.terminate()
        self.wait_log(r"event=stopping ")
        status, _, body = self.get("/healthz")
        self.assertEqual((status, body), (503, "stopping\n"))
        # the scrape still works while draining
        m = self.scrape()
        self.assertEqual(self.value(m, "sessions_open",
                                    listener="127.0.0.1:%d" % self.port), 1)
        r.send(b"last line\r\n.\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.proxy.proc.wait(T), 0)


    def test_promtool_accepts_exposition(self):
        """Every metric (the daily recipient budget's included) passes promtool's lint."""
        self.start()
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        s.quit()
        self.rig.sink_wait(1, T)
        status, _, body = self.get("/metrics")
        self.assertEqual(status, 200)
        for name in ("account_recipients_24h", "account_recipient_limit",
                     "account_budget_held_total"):
            self.assertIn("# TYPE " + P + name + " ", body)
        series = parse_exposition(body)
        self.assertEqual(self.value(series, "account_recipients_24h", account="scanners"), 1)
        self.assertEqual(self.value(series, "account_recipient_limit", account="scanners"), 10000)
        promtool_check(self, body)


class TestMetricsConfig(ProxyCase):
    def test_metrics_listen_errors(self):
        # a bad address is a --check error naming the key; a port in use stops start-up
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(),
                                    devices=test_relay.default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"),
                                    proxy_extra={"metrics_listen": "localhost:9925"})
        path = os.path.join(self.tmp, "bad.ini")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([test_relay.BINARY, "--config", path, "--check"],
                           capture_output=True, timeout=T)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.decode(), r"bad\.ini:\d+: metrics_listen: invalid address "
                                            r"'localhost:9925'")


if __name__ == "__main__":
    unittest.main()
