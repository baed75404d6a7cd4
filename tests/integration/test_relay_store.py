#!/usr/bin/python3
"""The device side of delivery = spool and direct-then-spool (proxy/delivery/backend_store.c), with the
rig's real Dovecot upstream: what the device hears, what reaches the upstream byte for byte, and
what stays on disk.
- direct-then-spool, upstream fine: the device hears the upstream's own 250; nothing stays in
  the spool (not even in tmp/).
- spool: the device hears "250 2.0.0 Ok: queued as ID" once the message is committed; the queue
  delivers it; the log ties ID to the delivery. The same with spool_commit_threads = 0 (commits
  on the loop).
- direct-then-spool while a message of the same account waits for its retry: the new message
  goes into the queue behind it (nothing overtakes what waits; a held message does not count).
- a body the device side refuses (a line too long) leaves nothing behind.
- direct-then-spool against the Exchange stand-in (exchange_standin.py: no real peer refuses one
  recipient of two): one recipient refused for good, the other accepted: the device hears 250,
  and one bounce from <> names the refused recipient and the message's queue id.
- direct-then-spool with an upstream slower than direct_attempt_timeout: the device hears "250
  queued" in time, and the queue delivers the message (at least once).

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
              tests/integration/test_relay_store.py -v TestRelayStore.test_spool_mode
"""
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402,F401
import test_relay  # noqa: E402
from test_relay import T, MSG, ProxyCase  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402

EXCHANGE = None


def setUpModule():
    global EXCHANGE
    test_relay.setUpModule()
    rig = test_relay.RIG
    EXCHANGE = ExchangeStandin(sop_rig.free_port(), rig.cert_file, rig.key_file).start()


def tearDownModule():
    if EXCHANGE is not None:
        EXCHANGE.stop()
    test_relay.tearDownModule()


def msg(n):
    return (b"From: Copier 3F <copier@contoso.test>\r\nTo: Alice <alice@contoso.test>\r\n"
            b"Subject: scan %d\r\nMessage-ID: <scan-%d@copier.test>\r\n\r\n"
            b"page %d\r\n.leading dot stays\r\n" % (n, n, n))


class TestRelayStore(ProxyCase):
    def spool_files(self):
        root = os.path.join(self.tmp, "state", "spool")
        out = []
        for sub in ("tmp", "queue"):
            d = os.path.join(root, sub)
            out += [os.path.join(sub, n) for n in (os.listdir(d) if os.path.isdir(d) else [])]
        return sorted(out)

    def wait_spool_empty(self, timeout=T):
        deadline = time.monotonic() + timeout
        while self.spool_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.spool_files(), [])

    def send(self, data, rcpts=("alice@contoso.test",)):
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        for r in rcpts:
            self.assertEqual(s.rcpt(r)[0], 250)
        code, text = s.data(data)
        s.quit()
        return code, text.decode()

    def queue_cmd(self, *args):
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg, "queue"] + list(args),
                           capture_output=True, timeout=T * 3)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r.stdout.decode()

    def test_direct_then_spool_delivered_leaves_nothing(self):
        self.start_proxy(account_extra={"delivery": "direct-then-spool"})
        code, text = self.send(msg(1))
        self.assertEqual(code, 250)
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as SINK\d+",
                         "the device hears the upstream's own 250")
        m = self.one_message()
        self.assertEqual(self.body_of(m), msg(1))
        self.assertEqual(self.spool_files(), [])
        line = self.message_log()[0]
        self.assertIn("result=delivered", line)
        self.assertIn("delivery=direct-then-spool", line)

    def check_spool_mode(self):
        code, text = self.send(msg(2), rcpts=("alice@contoso.test", "bob@contoso.test"))
        self.assertEqual(code, 250)
        qid = re.match(r"^2\.0\.0 Ok: queued as ([0-9a-f]{16})$", text)
        self.assertIsNotNone(qid, text)
        qid = qid.group(1)
        self.assertIn("result=queued", self.message_log()[0])
        self.assertIn("queue_id=%s" % qid, self.message_log()[0])
        m = self.one_message()
        self.assertEqual(self.body_of(m), msg(2))
        self.assertEqual(sorted(m["rcpt_tos"]), ["alice@contoso.test", "bob@contoso.test"])
        self.wait_log(r"event=queue_delivered queue_id=%s " % qid)
        self.wait_spool_empty()

    def test_spool_mode(self):
        self.start_proxy(account_extra={"delivery": "spool"})
        self.check_spool_mode()

    def test_spool_mode_commits_on_the_loop(self):
        self.start_proxy(account_extra={"delivery": "spool"},
                         proxy_extra={"spool_commit_threads": "0"})
        self.check_spool_mode()

    def test_nothing_overtakes_a_waiting_message(self):
        self.start_proxy(account_extra={"delivery": "direct-then-spool"})
        # The upstream is down: the first message is queued after the attempt, to be retried
        # in a minute or so.
        self.rig.dovecot_stop()
        self.addCleanup(self.rig.dovecot_start)
        code, text = self.send(msg(3))
        self.assertEqual(code, 250)
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as [0-9a-f]{16}$")
        self.rig.dovecot_start()
        # Back up, but the account has a message waiting: the next one queues behind it.
        code, text = self.send(msg(4))
        self.assertEqual(code, 250)
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as [0-9a-f]{16}$",
                         "a message behind a queued one of its account goes into the queue")
        time.sleep(1)
        self.assertEqual(self.rig.sink_messages(), [], "it overtook the waiting message")
        self.queue_cmd("flush")
        msgs = self.rig.sink_wait(2, T)
        self.assertEqual([self.body_of(m) for m in msgs], [msg(3), msg(4)])
        self.wait_spool_empty()

    def test_one_recipient_refused_is_bounced(self):
        EXCHANGE.reset()
        EXCHANGE.script = {"RCPT": lambda tx: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                           "Recipient not found by SMTP address lookup"
                           if tx["rcpts"][-1] == "bob@contoso.test" else None}
        self.addCleanup(setattr, EXCHANGE, "script", {})
        self.start_proxy(account_extra={"delivery": "direct-then-spool"},
                         upstream_port=EXCHANGE.port)
        code, text = self.send(msg(5), rcpts=("alice@contoso.test", "bob@contoso.test"))
        self.assertEqual(code, 250)
        self.assertIn("Queued mail for delivery", text, "the upstream's own 250")
        line = self.message_log()[0]
        self.assertIn("result=delivered", line)
        qid = re.search(r" queue_id=([0-9a-f]{16})", line).group(1)
        deadline = time.monotonic() + T
        while len(EXCHANGE.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        self.assertEqual(len(EXCHANGE.messages), 2, "the message and one bounce")
        orig, dsn = EXCHANGE.messages
        self.assertEqual(orig["rcpts"], ["alice@contoso.test"])
        self.assertEqual(orig["data"], msg(5))
        self.assertEqual(dsn["mail_from"], "", "a bounce goes from the null sender")
        self.assertEqual(dsn["rcpts"], ["copier@contoso.test"])
        self.assertIn(b"report-type=delivery-status", dsn["data"])
        self.assertIn(b"Final-Recipient: rfc822; bob@contoso.test", dsn["data"])
        self.assertNotIn(b"Final-Recipient: rfc822; alice@contoso.test", dsn["data"])
        self.assertIn(b"Status: 5.1.10", dsn["data"])
        self.assertIn(b"X-Queue-ID: " + qid.encode(), dsn["data"])
        self.assertIn(b"Subject: scan 5", dsn["data"], "the original's headers are quoted")
        self.assertNotIn(b"page 5", dsn["data"], "never its body")
        self.wait_spool_empty()

    def test_slow_upstream_queued_before_the_device_gives_up(self):
        EXCHANGE.reset()
        EXCHANGE.script = {}
        EXCHANGE.delay = 4.0  # the stand-in holds its verdict on the final dot
        self.addCleanup(setattr, EXCHANGE, "delay", 0.0)
        self.start_proxy(account_extra={"delivery": "direct-then-spool"},
                         proxy_extra={"direct_attempt_timeout": "1s"},
                         upstream_port=EXCHANGE.port)
        t0 = time.monotonic()
        code, text = self.send(msg(6))
        waited = time.monotonic() - t0
        self.assertEqual(code, 250)
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as [0-9a-f]{16}$")
        self.assertLess(waited, 3.5, "the device waited for the slow upstream")
        self.wait_log(r"event=direct_attempt_timeout session=\S+ account=scanners after_s=1 ")
        EXCHANGE.delay = 0.0
        self.queue_cmd("flush")
        self.wait_spool_empty()
        time.sleep(4.5)  # the cut attempt's verdict, if the stand-in still gives one
        got = [m for m in EXCHANGE.messages if m["data"] == msg(6)]
        # at least once; twice only if the cut attempt had already reached its final dot
        self.assertIn(len(got), (1, 2), EXCHANGE.messages)

    def test_refused_body_leaves_nothing(self):
        self.start_proxy(account_extra={"delivery": "spool"})
        s = self.smtp()
        s.ehlo("copier.test")
        s.mail("copier@contoso.test")
        s.rcpt("alice@contoso.test")
        code, _ = s.data(b"Subject: x\r\n\r\n" + b"a" * 2000 + b"\r\n")
        self.assertEqual(code // 100, 5)
        self.assertEqual(self.spool_files(), [])
        self.assert_nothing_relayed(0.5)


if __name__ == "__main__":
    unittest.main()
