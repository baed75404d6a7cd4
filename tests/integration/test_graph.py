#!/usr/bin/python3
"""Accounts with upstream = graph (issue 12, docs/graph.md): the real binary, devices speaking
SMTP to it, and the Graph stand-in (graph_standin.py: tokens checked against the IdP stand-in's
key, audience and roles; 4 MB requests; 4 in flight per mailbox; drafts and upload sessions;
faults on demand) relaying what it accepts to the rig's sink, which we read back.
- a small message: one sendMail, the sink gets the device's message (headers, body);
- recipients: an envelope-only recipient gets it (Bcc: added, not relayed), a To: address the
  device did not give in RCPT does not;
- a 12 MB scan with two attachments: a draft, two upload sessions in 320 KiB multiples, send;
  every attachment's bytes arrive as sent;
- 429 with Retry-After, then success: the device hears 250 queued, the message arrives once,
  after the wait;
- a 503 storm: every message waits in the spool, none is lost or doubled, the account does not
  hammer Graph while it says Retry-After;
- 403 ErrorAccessDenied: the device hears 550 5.7.1, the log explains it;
- a 401 (expired token): a fresh token, one retry, delivered;
- delivery = direct: a temporary failure is a 4xx to the device and nothing stays on disk;
- SIZE= beyond 150 MB: 552 5.3.4 at MAIL;
- delivery = direct with the daily recipient budget used: 451 4.7.1 at MAIL;
- kill -9 during an upload session: after the restart the message arrives, once;
- at most 4 requests in flight per mailbox with 8 devices at once;
- `test ACCOUNT --to` sends through Graph and prints each request.
Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
              tests/integration/test_graph.py -v TestGraph.test_small_message
"""
import base64
import email
import email.policy
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_metrics  # noqa: E402
import test_relay  # noqa: E402
from test_relay import T, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def small(n, to="alice@contoso.test", extra=b""):
    return (b"From: Copier 3F <copier@contoso.test>\r\nTo: <%s>\r\n" % to.encode() + extra +
            b"Subject: scan %d\r\nMessage-ID: <graph-%d@copier.test>\r\n\r\n"
            b"page %d\r\n.leading dot stays\r\n" % (n, n, n))


def scan(sizes):
    """A multipart/mixed scan with one attachment per size (random bytes, base64 76-column
    lines), and the attachments' bytes."""
    atts = [os.urandom(s) for s in sizes]
    parts = [b"From: Copier 3F <copier@contoso.test>\r\nTo: <alice@contoso.test>\r\n"
             b"Subject: big scan\r\nMessage-ID: <bigscan@copier.test>\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"b0undary\"\r\n\r\n"
             b"--b0undary\r\nContent-Type: text/plain\r\n\r\nScanned pages attached.\r\n"]
    for i, a in enumerate(atts):
        b64 = base64.encodebytes(a).replace(b"\n", b"\r\n")
        parts.append(b"--b0undary\r\nContent-Type: application/pdf; name=\"scan%d.pdf\"\r\n"
                     b"Content-Disposition: attachment; filename=\"scan%d.pdf\"\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\n" % (i, i) + b64)
    parts.append(b"--b0undary--\r\n")
    return b"".join(parts), atts


def attachments_of(data):
    m = email.message_from_bytes(data, policy=email.policy.default)
    return {p.get_filename(): p.get_payload(decode=True) for p in m.iter_attachments()}


class GraphCase(ProxyCase):
    def setUp(self):
        super().setUp()
        self.graph = sop_rig.start_graph_standin(self.rig, mailboxes=())
        self.addCleanup(self.graph.stop)
        self.graph.reset()  # requests() from here: the stand-in's log is the rig's, shared

    def start_graph_proxy(self, delivery="direct-then-spool", proxy_extra=None, **acct):
        # Graph refuses a From: the mailbox may not send as (ErrorSendAsDenied), as the stand-in
        # does: the devices' From: becomes the mailbox, as docs/graph.md advises.
        extra = {"upstream": "graph", "graph_url": self.graph.url, "delivery": delivery,
                 "rate_limit": None}
        extra.update(acct)
        return self.start_proxy(account_extra=extra, proxy_extra=proxy_extra, edit=lambda t: t.replace(
            "sender_rewrite = off", "sender_rewrite = header"))

    def send(self, data, rcpts=("alice@contoso.test",), mail_opts=()):
        s = self.smtp()
        s.ehlo("copier-3f.test")
        s.mail("copier@contoso.test", list(mail_opts))
        for r in rcpts:
            code, text = s.rcpt(r)
            self.assertEqual(code, 250, text)
        code, text = s.data(data)
        s.quit()
        return code, text.decode(errors="replace")

    def requests(self, kind=None):
        return [r for r in self.graph.requests() if kind is None or r.get("kind") == kind]

    def spool_left(self):
        q = os.path.join(self.tmp, "state", "spool", "queue")
        return sorted(os.listdir(q)) if os.path.isdir(q) else []


class TestGraph(GraphCase):
    def test_small_message(self):
        self.start_graph_proxy()
        code, text = self.send(small(1))
        self.assertEqual(code, 250, text)
        m = self.one_message()
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test"])
        self.assertIn(b"Subject: scan 1\r\n", m["data"])
        self.assertIn(b"\r\n\r\npage 1\r\n.leading dot stays\r\n", m["data"])
        self.assertEqual([r["kind"] for r in self.requests()], ["sendMail"])
        self.assertEqual(self.requests()[0]["status"], 202)
        line = self.wait_log(r"event=deliver [^\n]*transport=graph[^\n]*").group(0)
        self.assertIn("result=delivered", line)
        self.assertIn("requests=1", line)
        self.assertEqual(self.spool_left(), [], "nothing stays in the spool")

    def test_recipients_follow_the_envelope(self):
        self.start_graph_proxy()
        data = small(2, to="alice@contoso.test", extra=b"Cc: <list@contoso.test>\r\n")
        code, text = self.send(data, rcpts=("alice@contoso.test", "bob@contoso.test"))
        self.assertEqual(code, 250, text)
        m = self.one_message()
        self.assertEqual(sorted(m["rcpt_tos"]), ["alice@contoso.test", "bob@contoso.test"],
                         "Graph must send to the envelope: bob (Bcc) yes, list (Cc only) no")
        head = m["data"].split(b"\r\n\r\n", 1)[0]
        self.assertNotIn(b"list@contoso.test", head)
        self.assertNotIn(b"Bcc:", head)
        line = self.wait_log(r"event=deliver [^\n]*transport=graph[^\n]*").group(0)
        self.assertIn("header_rcpts_dropped=1", line)
        self.assertIn("bcc_added=1", line)

    def test_12mb_scan_with_two_attachments(self):
        self.start_graph_proxy(delivery="spool")
        data, atts = scan([6 * 1024 * 1024, 5 * 1024 * 1024 + 12345])
        code, text = self.send(data)
        self.assertEqual(code, 250, text)
        self.assertRegex(text, r"queued as [0-9a-f]{16}")
        m = self.rig.sink_wait(1, timeout=60)[0]
        got = attachments_of(m["data"])
        self.assertEqual(sorted(got), ["scan0.pdf", "scan1.pdf"])
        self.assertEqual(hashlib.sha256(got["scan0.pdf"]).hexdigest(),
                         hashlib.sha256(atts[0]).hexdigest())
        self.assertEqual(hashlib.sha256(got["scan1.pdf"]).hexdigest(),
                         hashlib.sha256(atts[1]).hexdigest())
        kinds = [r["kind"] for r in self.requests()]
        self.assertEqual(kinds[0], "createMessage")
        self.assertEqual(kinds.count("createUploadSession"), 2)
        self.assertEqual(kinds[-1], "send")
        for r in self.requests("upload"):
            self.assertLessEqual(r["req_bytes"], 4 * 1024 * 1024)
            self.assertFalse(r.get("auth"), "no Authorization header on an upload URL")
        self.wait_log(r"event=deliver [^\n]*transport=graph[^\n]*attachments=2")
        time.sleep(0.3)
        self.assertEqual(len(self.rig.sink_messages()), 1)
        self.assertEqual(self.spool_left(), [])

    def test_429_then_success(self):
        mport = sop_rig.free_port()
        self.start_graph_proxy(proxy_extra={"metrics_listen": "127.0.0.1:%d" % mport})
        self.graph.fail(status=429, count=1, retry_after=2)
        t0 = time.monotonic()
        code, text = self.send(small(3))
        self.assertEqual(code, 250, text)
        self.assertRegex(text, r"queued as [0-9a-f]{16}", "a throttled message is queued")
        m = self.rig.sink_wait(1, timeout=90)[0]
        self.assertIn(b"Subject: scan 3", m["data"])
        self.assertGreaterEqual(time.monotonic() - t0, 2.0, "Retry-After was not honoured")
        self.wait_log(r"event=graph_throttled [^\n]*account=scanners")
        time.sleep(0.5)
        self.assertEqual(len(self.rig.sink_messages()), 1, "delivered more than once")
        # the counters per account: one 429, one 202, one throttled; promtool's lint passes
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=T) as r:
            body = r.read().decode()
        p = "smtp_oauth_proxy_"
        self.assertIn(p + 'graph_requests_total{account="scanners",status="429"} 1\n', body)
        self.assertIn(p + 'graph_requests_total{account="scanners",status="202"} 1\n', body)
        self.assertIn(p + 'graph_throttled_total{account="scanners"} 1\n', body)
        test_metrics.promtool_check(self, body)

    def test_503_storm(self):
        self.start_graph_proxy()
        self.graph.fail(status=503, count=-1, retry_after=1)
        for i in range(5):
            code, text = self.send(small(10 + i))
            self.assertEqual(code, 250, text)
            self.assertRegex(text, r"queued as")
        time.sleep(3)
        during = self.requests()
        self.assertLessEqual(len(during), 12, "the account hammered Graph through Retry-After: %r"
                             % [(r["kind"], r["status"], r.get("time")) for r in during])
        self.graph.control(clear_faults=True)
        msgs = self.rig.sink_wait(5, timeout=120)
        subjects = sorted(re.search(rb"Subject: (scan \d+)", m["data"]).group(1) for m in msgs)
        self.assertEqual(subjects, sorted(b"scan %d" % (10 + i) for i in range(5)))
        time.sleep(1)
        self.assertEqual(len(self.rig.sink_messages()), 5, "a message arrived twice")
        self.assertEqual(self.spool_left(), [])

    def test_403_access_denied(self):
        self.start_graph_proxy()
        self.graph.fail(error="ErrorAccessDenied", count=1)
        code, text = self.send(small(4))
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.1", text)
        line = self.wait_log(r"event=deliver [^\n]*transport=graph[^\n]*").group(0)
        self.assertIn("graph_code=ErrorAccessDenied", line)
        self.assertRegex(line, r"explain=\"[^\"]*Mail\.Send")
        self.assert_nothing_relayed()

    def test_401_fresh_token_and_retry(self):
        self.start_graph_proxy()
        self.graph.fail(status=401, count=1)
        code, text = self.send(small(5))
        self.assertEqual(code, 250, text)
        self.one_message()
        statuses = [r["status"] for r in self.requests("sendMail")]
        self.assertEqual(statuses, [401, 202])
        self.assertGreaterEqual(len(self.rig.idp_stats()["issued"]), 2, "no fresh token")

    def test_direct_mode_temporary_failure(self):
        self.start_graph_proxy(delivery="direct")
        self.graph.fail(status=503, count=1, retry_after=1)
        code, text = self.send(small(6))
        self.assertEqual(code // 100, 4, text)
        self.assertEqual(self.spool_left(), [], "direct keeps nothing on disk")
        code, text = self.send(small(7))
        self.assertEqual(code, 250, text)
        self.one_message()

    def test_direct_mode_daily_budget(self):
        """delivery = direct: when the account's daily recipient budget is used, the device hears
        451 4.7.1 at MAIL (nothing is queued in direct), as for an SMTP account."""
        self.start_graph_proxy(delivery="direct", daily_recipient_limit="2")
        for i in range(2):
            code, text = self.send(small(40 + i))
            self.assertEqual(code, 250, text)
        s = self.smtp()
        s.ehlo("copier-3f.test")
        code, text = s.mail("copier@contoso.test")
        self.assertEqual(code, 451, text)
        self.assertIn(b"4.7.1 The daily recipient budget of account scanners is used (2 of 2",
                      text)
        self.assertEqual(len(self.rig.sink_wait(2)), 2)
        self.assertEqual(self.spool_left(), [])

    def test_size_beyond_graph(self):
        self.start_graph_proxy()
        s = self.smtp()
        s.ehlo("copier-3f.test")
        code, text = s.mail("copier@contoso.test", ["SIZE=%d" % (200 * 1024 * 1024)])
        self.assertEqual(code, 552, text)
        self.assertIn(b"5.3.4", text)

    def test_concurrency_at_most_4(self):
        self.start_graph_proxy()
        self.graph.control(delay={"sendMail": 0.4})
        errors = []

        def one(i):
            try:
                code, text = self.send(small(100 + i))
                if code != 250:
                    errors.append(text)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(errors, [])
        self.rig.sink_wait(8, timeout=60)
        st = self.graph.stats()
        peak = max(st["peak_in_flight"].values())
        self.assertLessEqual(peak, 4)
        self.assertEqual(sum(st.get("throttled", {}).values()) if isinstance(
            st.get("throttled"), dict) else st.get("throttled", 0), 0)

    def test_kill_during_upload_session(self):
        self.start_graph_proxy(delivery="spool")
        self.graph.control(delay={"upload": 1.0})
        data, atts = scan([7 * 1024 * 1024])
        code, text = self.send(data)
        self.assertEqual(code, 250, text)
        deadline = time.monotonic() + 30
        while not self.requests("upload") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.requests("upload"), "no upload started")
        self.proxy.proc.send_signal(signal.SIGKILL)
        self.proxy.proc.wait(10)
        self.proxy.proc = None
        self.proxy.logf.close()
        self.graph.control(delay={})
        self.proxy = sop_rig.ProxyProcess(test_relay.BINARY, self.cfg,
                                          os.path.join(self.tmp, "proxy-restart.log"))
        self.proxy.start(ports=[self.port])
        msgs = self.rig.sink_wait(1, timeout=90)
        got = attachments_of(msgs[0]["data"])
        self.assertEqual(hashlib.sha256(got["scan0.pdf"]).digest(),
                         hashlib.sha256(atts[0]).digest())
        time.sleep(2)
        self.assertEqual(len(self.rig.sink_messages()), 1, "delivered twice")

    def test_cli_test_to(self):
        self.start_graph_proxy()
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg, "test", "scanners", "--to",
                            "alice@contoso.test"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("POST /v1.0/users/", r.stdout)
        self.assertIn("202", r.stdout)
        m = self.one_message()
        self.assertIn(b"smtp-oauth-proxy test", m["data"])


if __name__ == "__main__":
    unittest.main()
